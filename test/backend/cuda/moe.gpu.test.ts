import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import type { Activation, Backend, ExpertWeights, MoeWeights, RoutingParams, Tensor } from '../../../src/backend/backend.ts';
import { CpuBackend } from '../../../src/backend/cpu/cpu-backend.ts';
import { CpuExpertRouting } from '../../../src/backend/cpu/ops/moe.ts';
import { CudaBackend } from '../../../src/backend/cuda/cuda-backend.ts';
import { CudaTensor } from '../../../src/backend/cuda/cuda-tensor.ts';
import { composeMoe } from '../../../src/backend/moe-composition.ts';
import { CudaExpertRouting, expertTileRows, GEMV_MAX_TOKENS } from '../../../src/backend/cuda/kernels/moe-route.ts';
import { BlockAssignment, bf16Tensor, buildBatch, randomBf16Values, seededRng } from '../../../src/bench/synthetic-batch.ts';
import { floatToBf16Bits } from '../../../src/tensor/host-dtype.ts';
import { quantizeMxfp4 } from '../../../src/tensor/mxfp4.ts';
import { dequantizeWeight, emptyQuantizedWeight, fillInt4Padding, floatToFp8E4m3, putCode, type QuantizedFormat } from '../../../src/tensor/quantized-weight.ts';
import { pick, randInt, relativeError, testSeed } from '../../helpers/gpu-test-support.ts';

// The MoE ops of the CUDA backend against the CPU backend: routing (every scoring, selection bias,
// grouping, normalization), the grouping of pairs by expert, the expert MLPs on each path (a
// single token, decode-sized GEMVs, grouped GEMMs of every tile height), expert shards, both
// biases and all activations, a decode-sized call replayed from a CUDA graph, and the whole block
// (`moe`) of one token in the fused decode kernel, against the CPU and the split path.

const rng = seededRng(testSeed('cuda moe'));
// The fused single-token kernel is opt-in until it has run on a GPU: these tests ask for it.
const gpu = new CudaBackend({ arenaBytes: 64 * 1024 * 1024, poisonStepTensors: true, moeDecode: 'fused' });
const cpu = new CpuBackend();
after(() => gpu.dispose());

const TOLERANCE = 1e-2;
/** Routing decisions closer than this (relative) could differ between float64 and float32: such tokens are redrawn. */
const MIN_MARGIN = 1e-4;

interface Pair {
  cpu: Tensor;
  gpu: Tensor;
}

function bf16Pair(shape: number[], values: Float32Array, options: { gpuFloat32?: boolean } = {}): Pair {
  const t = bf16Tensor(shape, values);
  return { cpu: cpu.loadWeight(t), gpu: gpu.loadWeight(t, { float32: options.gpuFloat32 ?? false }) };
}

function randomPair(shape: number[], scale: number): Pair {
  return bf16Pair(shape, randomBf16Values(rng, shape.reduce((a, b) => a * b, 1), scale));
}

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

/** The smallest relative gap at which this token's choice is made (kept groups, then the top k), by the routing rules. */
function routingMargin(logits: Float32Array, params: RoutingParams, bias: Float32Array | null): number {
  const E = logits.length;
  const max = Math.max(...logits);
  const z = logits.reduce((s, l) => s + Math.exp(l - max), 0);
  const score = (l: number) => (params.scoring === 'softmax' ? Math.exp(l - max) / z : params.scoring === 'sigmoid' ? sigmoid(l) : l);
  let choice = Array.from(logits, (l, e) => score(l) + (bias?.[e] ?? 0));
  const gap = (sorted: number[], k: number) => (k >= sorted.length ? Infinity : (sorted[k - 1] - sorted[k]) / Math.max(Math.abs(sorted[k - 1]), Math.abs(sorted[k]), 1e-30));
  let margin = Infinity;
  if (params.groups !== null) {
    const size = E / params.groups.numGroups;
    const groupScore = (g: number) => {
      const members = choice.slice(g * size, (g + 1) * size).sort((a, b) => b - a);
      return params.groups!.score === 'max' ? members[0] : members[0] + members[1];
    };
    const scores = Array.from({ length: params.groups.numGroups }, (_, g) => groupScore(g));
    margin = gap([...scores].sort((a, b) => b - a), params.groups.topkGroups);
    const kept = new Set(scores.map((s, g) => ({ s, g })).sort((a, b) => b.s - a.s || a.g - b.g).slice(0, params.groups.topkGroups).map((x) => x.g));
    choice = choice.filter((_, e) => kept.has(Math.floor(e / size)));
  }
  return Math.min(margin, gap(choice.sort((a, b) => b - a), params.topK));
}

/** [tokens, experts] bf16 logits whose every token's routing is decided by a clear margin. */
function decisiveLogits(tokens: number, experts: number, params: RoutingParams, bias: Float32Array | null, scale: number): Float32Array {
  const out = new Float32Array(tokens * experts);
  for (let t = 0; t < tokens; t++) {
    let row: Float32Array;
    do row = randomBf16Values(rng, experts, scale);
    while (routingMargin(row, params, bias) < MIN_MARGIN);
    out.set(row, t * experts);
  }
  return out;
}

interface RoutingCase {
  tokens: number;
  experts: number;
  params: RoutingParams;
  /** The bias values, and how the GPU holds them. */
  bias: { values: Float32Array; gpuFloat32: boolean } | null;
  logitsFloat32: boolean;
}

function randomRoutingCase(tokens: number, experts: number, topK: number): RoutingCase {
  const scoring = pick(rng, ['softmax', 'sigmoid', 'topk-softmax'] as const);
  const divisors = [2, 4, 8].filter((g) => experts % g === 0 && experts / g >= 2);
  const grouped = divisors.length > 0 && rng() < 0.4;
  const numGroups = grouped ? pick(rng, divisors) : 1;
  const topkGroups = grouped ? randInt(rng, Math.ceil(topK / (experts / numGroups)), numGroups) : 1;
  const groups = grouped ? { numGroups, topkGroups, score: pick(rng, ['max', 'top2-sum'] as const) } : null;
  const bias = rng() < 0.4 ? { values: randomBf16Values(rng, experts, 0.5), gpuFloat32: rng() < 0.7 } : null;
  return {
    tokens,
    experts,
    // A soft-cap keeps the logits' order, so the decisive logits stay decisive (Laguna's router).
    params: { topK, scoring, selectionBias: null, groups, normalize: rng() < 0.5, scale: pick(rng, [1, 2.5]), logitSoftcap: rng() < 0.3 ? pick(rng, [4, 8]) : null },
    bias,
    logitsFloat32: rng() < 0.3,
  };
}

/** Routes the case on both backends from the same logits. */
function routeBoth(c: RoutingCase): { cpu: CpuExpertRouting; gpu: CudaExpertRouting; logits: Pair } {
  const bias = c.bias === null ? null : bf16Pair([c.experts], c.bias.values, { gpuFloat32: c.bias.gpuFloat32 });
  const logits = bf16Pair([c.tokens, c.experts], decisiveLogits(c.tokens, c.experts, c.params, c.bias?.values ?? null, 3), { gpuFloat32: c.logitsFloat32 });
  const routed = {
    cpu: cpu.routeExperts(logits.cpu, { ...c.params, selectionBias: bias?.cpu ?? null }),
    gpu: gpu.routeExperts(logits.gpu, { ...c.params, selectionBias: bias?.gpu ?? null }),
  };
  assert.ok(routed.cpu instanceof CpuExpertRouting && routed.gpu instanceof CudaExpertRouting);
  return { cpu: routed.cpu, gpu: routed.gpu, logits };
}

function download(ptr: number, count: number, type: 'i32' | 'f32'): Int32Array | Float32Array {
  const out = type === 'i32' ? new Int32Array(count) : new Float32Array(count);
  if (count > 0) gpu.device.download(out, ptr);
  return out;
}

function describeCase(c: RoutingCase): string {
  const g = c.params.groups;
  return `${c.tokens} tokens, ${c.experts} experts, top-${c.params.topK} ${c.params.scoring}${g ? ` groups ${g.numGroups}/${g.topkGroups} ${g.score}` : ''}${c.bias ? ` bias ${c.bias.gpuFloat32 ? 'f32' : 'bf16'}` : ''}${c.params.normalize ? ' normalized' : ''} scale ${c.params.scale}${c.logitsFloat32 ? ' f32 logits' : ''}`;
}

test('routeExperts chooses the CPU reference\'s experts with its weights, and groups the pairs by expert consistently', () => {
  for (let trial = 0; trial < 40; trial++) {
    const experts = pick(rng, [4, 6, 8, 16, 60, 64, 128, 256]);
    const c = randomRoutingCase(pick(rng, [1, 2, 5, 8, randInt(rng, 9, 300)]), experts, randInt(rng, 1, Math.min(8, experts)));
    const what = describeCase(c);
    const { cpu: ref, gpu: routed } = routeBoth(c);
    const pairs = c.tokens * c.params.topK;
    const b = routed.buffers;
    const ids = download(b.ids, pairs, 'i32');
    assert.deepEqual(ids, ref.routes.experts, `${what}: experts`);
    const weights = download(b.weights, pairs, 'f32');
    weights.forEach((w, i) => assert.ok(Math.abs(w - ref.routes.weights[i]) <= 1e-5 * Math.max(1, Math.abs(ref.routes.weights[i])), `${what}: weight ${i} ${w} vs ${ref.routes.weights[i]}`));

    // The grouping: offsets are the per-expert counts' prefix sums, pairPos inverts sortedPairs,
    // each pair sits in its expert's run, and the tiles cover each run in steps of tileRows.
    const offsets = download(b.offsets, c.experts + 1, 'i32');
    const counts = new Array<number>(c.experts).fill(0);
    ids.forEach((e) => counts[e]++);
    counts.forEach((n, e) => assert.equal(offsets[e + 1] - offsets[e], n, `${what}: expert ${e}'s run`));
    assert.equal(offsets[0], 0);
    const sorted = download(b.sortedPairs, pairs, 'i32');
    const pairPos = download(b.pairPos, pairs, 'i32');
    for (let p = 0; p < pairs; p++) {
      assert.equal(sorted[pairPos[p]], p, `${what}: pair ${p}'s place`);
      const e = ids[p];
      assert.ok(pairPos[p] >= offsets[e] && pairPos[p] < offsets[e + 1], `${what}: pair ${p} outside expert ${e}'s run`);
    }
    const tileRows = expertTileRows(c.tokens, c.params.topK, c.experts);
    assert.equal(routed.tileRows, tileRows);
    const tileStart = download(b.tileStart, c.experts + 1, 'i32');
    const tiles = download(b.tiles, 2 * tileStart[c.experts], 'i32');
    for (let e = 0; e < c.experts; e++) {
      assert.equal(tileStart[e + 1] - tileStart[e], Math.ceil(counts[e] / tileRows), `${what}: expert ${e}'s tiles`);
      for (let i = tileStart[e]; i < tileStart[e + 1]; i++) assert.deepEqual([tiles[2 * i], tiles[2 * i + 1]], [e, offsets[e] + (i - tileStart[e]) * tileRows]);
    }
  }
});

interface ExpertCase {
  tokens: number;
  experts: number;
  topK: number;
  hidden: number;
  n: number;
  biased: boolean;
  activation: Activation;
  /** The shard this device holds. */
  first: number;
  count: number;
  /** gate/up and down packed in MXFP4 (hidden and n multiples of 32). */
  mxfp4?: boolean;
  /** gate/up and down in an int4/int8/fp8 layout (loadQuantizedExperts), groups of `group` columns (capped at the row), with zero points or not. */
  quant?: { format: Extract<QuantizedFormat, 'int4' | 'int8' | 'fp8-e4m3'>; group: number; zeros: boolean; actOrder?: boolean; fallback?: true };
}

const ACTIVATIONS: Activation[] = [{ kind: 'silu' }, { kind: 'gelu-tanh' }, { kind: 'clamped-swiglu', alpha: 1.702, limit: 7 }, { kind: 'clamped-swiglu', alpha: 1.702, limit: 1.5 }];

/** Random weights of a shape, MXFP4-packed on both backends. */
function mxfp4Pair(shape: number[], scale: number): Pair {
  const w = quantizeMxfp4(randomBf16Values(rng, shape.reduce((a, b) => a * b, 1), scale), shape);
  return { cpu: cpu.loadMxfp4Weight(w), gpu: gpu.loadMxfp4Weight(w) };
}

/**
 * Random codes, scales and zeros of `count` experts [count, rows, cols] stacked along the rows, on both
 * backends. A `fallback` case's shape is one the expert kernels do not take: the GPU dequantizes it to
 * bf16 by design, so its CPU reference is that bf16 rounding of the dequantized values (the rounding
 * alone moves the output of a 16-column down projection by up to 0.7 %, beside the bf16 kernels' own
 * 0.8 %: together they passed 1 % on 2 of 80 random draws).
 */
function quantizedPair(shape: number[], scale: number, q: NonNullable<ExpertCase['quant']>): Pair {
  const [count, rows, cols] = shape;
  const w = emptyQuantizedWeight(q.format, count * rows, cols, Math.min(q.group, cols), q.zeros);
  const top = q.format === 'int4' ? 15 : 255;
  for (let r = 0; r < w.rows; r++) {
    for (let col = 0; col < cols; col++) putCode(w, r, col, q.format === 'fp8-e4m3' ? floatToFp8E4m3(448 * (2 * rng() - 1)) : randInt(rng, 0, top));
  }
  // Scales that spread each format's codes over about ±scale.
  const span = q.format === 'int4' ? 8 : q.format === 'int8' ? 128 : 448;
  for (let i = 0; i < w.scales.length; i++) w.scales[i] = (scale / span) * (0.5 + rng());
  if (w.zeros !== null) for (let i = 0; i < w.zeros.length; i++) w.zeros[i] = randInt(rng, Math.floor(top / 4), Math.ceil((3 * top) / 4));
  fillInt4Padding(w);
  // GPTQ act-order: each expert's columns stored in a random order of its own.
  if (q.actOrder) {
    w.perm = new Int32Array(count * cols);
    for (let e = 0; e < count; e++) w.perm.set(randomPermutation(cols), e * cols);
  }
  const reference = q.fallback ? cpu.loadWeight(bf16Tensor(shape, dequantizeWeight(w))) : cpu.loadQuantizedExperts(w, count);
  return { cpu: reference, gpu: gpu.loadQuantizedExperts(w, count) };
}

function randomPermutation(length: number): Int32Array {
  const p = Int32Array.from({ length }, (_, i) => i);
  for (let i = length - 1; i > 0; i--) {
    const j = randInt(rng, 0, i);
    [p[i], p[j]] = [p[j], p[i]];
  }
  return p;
}

function expertWeights(c: ExpertCase): { cpu: ExpertWeights; gpu: ExpertWeights } {
  const { first, count, hidden, n } = c;
  const quant = c.quant;
  const matrix = quant !== undefined ? (shape: number[], scale: number) => quantizedPair(shape, scale, quant) : c.mxfp4 ? mxfp4Pair : randomPair;
  const gateUp = matrix([count, 2 * n, hidden], 3 / Math.sqrt(hidden));
  const down = matrix([count, hidden, n], 1 / Math.sqrt(n));
  const gateUpBias = c.biased ? randomPair([count, 2 * n], 0.5) : null;
  const downBias = c.biased ? randomPair([count, hidden], 0.5) : null;
  return {
    cpu: { first, count, gateUp: gateUp.cpu, down: down.cpu, gateUpBias: gateUpBias?.cpu ?? null, downBias: downBias?.cpu ?? null },
    gpu: { first, count, gateUp: gateUp.gpu, down: down.gpu, gateUpBias: gateUpBias?.gpu ?? null, downBias: downBias?.gpu ?? null },
  };
}

function checkExperts(c: ExpertCase): void {
  const routing = randomRoutingCase(c.tokens, c.experts, c.topK);
  const format = c.quant ? `${c.quant.format} groups of ${c.quant.group}${c.quant.zeros ? ' with zeros' : ''}${c.quant.actOrder ? ', act-order' : ''}, ` : c.mxfp4 ? 'MXFP4, ' : '';
  const what = `${format}${describeCase(routing)}, hidden ${c.hidden}, n ${c.n}, ${c.activation.kind}${c.activation.kind === 'clamped-swiglu' ? ` limit ${c.activation.limit}` : ''}${c.biased ? ', biases' : ''}, experts ${c.first}..${c.first + c.count - 1} held`;
  const { cpu: cpuRouting, gpu: gpuRouting } = routeBoth(routing);
  const x = randomPair([c.tokens, c.hidden], 1);
  const weights = expertWeights(c);
  const expected = cpu.toHost(cpu.expertMlp(x.cpu, cpuRouting, weights.cpu, c.activation));
  const actual = gpu.toHost(gpu.expertMlp(x.gpu, gpuRouting, weights.gpu, c.activation));
  const err = relativeError(actual, expected);
  assert.ok(err < TOLERANCE, `${what}: relative error ${err}`);
}

test('expertMlp on every path: one token, decode GEMVs, and grouped GEMMs of each tile height', () => {
  const silu: Activation = { kind: 'silu' };
  const cases: Omit<ExpertCase, 'first' | 'count'>[] = [
    // One token: the down projection fused with the weighted sum (32 experts of Qwen3-30B-A3B's shape, then Mixtral-like).
    { tokens: 1, experts: 32, topK: 8, hidden: 2048, n: 768, biased: false, activation: silu },
    { tokens: 1, experts: 8, topK: 2, hidden: 512, n: 1024, biased: false, activation: silu },
    // 2..8 tokens: GEMVs over the active experts, then the sum.
    { tokens: 2, experts: 128, topK: 8, hidden: 1024, n: 384, biased: true, activation: silu },
    { tokens: 8, experts: 4, topK: 2, hidden: 256, n: 200, biased: false, activation: ACTIVATIONS[2] },
    // More tokens: grouped GEMMs with 16, 32, 64 and 128-row tiles (pairs per expert 2.5, 25, 50, 150).
    { tokens: 20, experts: 64, topK: 8, hidden: 512, n: 256, biased: true, activation: ACTIVATIONS[3] },
    { tokens: 100, experts: 16, topK: 4, hidden: 264, n: 136, biased: false, activation: ACTIVATIONS[1] },
    { tokens: 200, experts: 8, topK: 2, hidden: 512, n: 96, biased: true, activation: silu },
    { tokens: 300, experts: 4, topK: 2, hidden: 136, n: 520, biased: false, activation: silu },
  ];
  for (const c of cases) checkExperts({ ...c, first: 0, count: c.experts });
  assert.deepEqual(
    cases.map((c) => expertTileRows(c.tokens, c.topK, c.experts)),
    [1, 1, 2, 8, 16, 32, 64, 128],
    'the cases cover every path',
  );
});

test('MXFP4 experts on every path (the kernels decode the packed blocks) equal the CPU on their dequantized values', () => {
  const swiglu = ACTIVATIONS[2];
  const cases: Omit<ExpertCase, 'first' | 'count'>[] = [
    // gpt-oss-20b's expert shape, one token (fused down + sum), then decode GEMVs and every GEMM tile height.
    { tokens: 1, experts: 4, topK: 2, hidden: 2880, n: 2880, biased: true, activation: swiglu },
    { tokens: 5, experts: 32, topK: 4, hidden: 640, n: 320, biased: true, activation: swiglu },
    { tokens: 20, experts: 64, topK: 8, hidden: 512, n: 256, biased: true, activation: swiglu },
    { tokens: 100, experts: 16, topK: 4, hidden: 288, n: 160, biased: false, activation: ACTIVATIONS[0] },
    { tokens: 200, experts: 8, topK: 2, hidden: 512, n: 96, biased: true, activation: swiglu },
    { tokens: 300, experts: 4, topK: 2, hidden: 160, n: 544, biased: false, activation: swiglu },
  ];
  for (const c of cases) checkExperts({ ...c, first: 0, count: c.experts, mxfp4: true });
  assert.deepEqual(cases.map((c) => expertTileRows(c.tokens, c.topK, c.experts)), [1, 5, 16, 32, 64, 128], 'the cases cover every path');
  for (let trial = 0; trial < 12; trial++) {
    const experts = randInt(rng, 4, 64);
    const first = randInt(rng, 0, experts - 1);
    checkExperts({
      tokens: rng() < 0.5 ? randInt(rng, 1, GEMV_MAX_TOKENS) : randInt(rng, GEMV_MAX_TOKENS + 1, 200),
      experts,
      topK: randInt(rng, 1, Math.min(8, experts)),
      hidden: 32 * randInt(rng, 1, 24),
      n: 32 * randInt(rng, 1, 16),
      biased: rng() < 0.5,
      activation: pick(rng, ACTIVATIONS),
      first,
      count: randInt(rng, 1, experts - first),
      mxfp4: true,
    });
  }
});

test('int4, int8 and fp8 experts on every path (GEMVs and grouped GEMMs reading the codes; the dequantizing fallback) equal the CPU on their dequantized values', () => {
  const silu: Activation = { kind: 'silu' };
  const int4 = { format: 'int4', group: 128, zeros: true } as const;
  const cases: ExpertCase[] = [
    // Qwen3-30B-A3B's expert shape at one token (fused down + sum): int4 groups of 128 with zeros (GPTQ, --quantization int4), fp8 128 x 128 blocks, int8 per channel.
    { tokens: 1, experts: 32, topK: 8, hidden: 2048, n: 768, biased: false, activation: silu, first: 0, count: 32, quant: int4 },
    { tokens: 1, experts: 32, topK: 8, hidden: 2048, n: 768, biased: false, activation: silu, first: 0, count: 32, quant: { format: 'fp8-e4m3', group: 128, zeros: false } },
    { tokens: 1, experts: 16, topK: 4, hidden: 1024, n: 512, biased: false, activation: silu, first: 0, count: 16, quant: { format: 'int8', group: 1 << 30, zeros: false } },
    // Decode GEMVs of 2..8 tokens: symmetric int4 groups of 32, asymmetric int8 groups of 64, per-channel fp8, an expert shard.
    { tokens: 3, experts: 64, topK: 8, hidden: 512, n: 256, biased: true, activation: silu, first: 0, count: 64, quant: { format: 'int4', group: 32, zeros: false } },
    { tokens: 8, experts: 8, topK: 2, hidden: 256, n: 192, biased: false, activation: ACTIVATIONS[2], first: 0, count: 8, quant: { format: 'int8', group: 64, zeros: true } },
    { tokens: 5, experts: 16, topK: 4, hidden: 384, n: 128, biased: false, activation: silu, first: 4, count: 9, quant: { format: 'fp8-e4m3', group: 1 << 30, zeros: false } },
    // Grouped GEMMs decoding each stage's codes, tiles of 16, 32, 64 and 128 rows.
    { tokens: 20, experts: 64, topK: 8, hidden: 512, n: 256, biased: true, activation: silu, first: 0, count: 64, quant: int4 },
    { tokens: 100, experts: 16, topK: 4, hidden: 256, n: 160, biased: false, activation: ACTIVATIONS[1], first: 0, count: 16, quant: { format: 'int8', group: 32, zeros: true } },
    { tokens: 200, experts: 8, topK: 2, hidden: 512, n: 96, biased: false, activation: silu, first: 2, count: 5, quant: { format: 'fp8-e4m3', group: 128, zeros: false } },
    { tokens: 300, experts: 4, topK: 2, hidden: 128, n: 512, biased: true, activation: silu, first: 0, count: 4, quant: { format: 'int4', group: 64, zeros: false } },
    // Shapes the kernels do not take, dequantized to bf16: int4 rows of 16 columns (one token), int8 groups of 48 (a prefill).
    { tokens: 1, experts: 8, topK: 2, hidden: 64, n: 16, biased: false, activation: silu, first: 0, count: 8, quant: { ...int4, fallback: true } },
    { tokens: 40, experts: 8, topK: 2, hidden: 96, n: 48, biased: false, activation: silu, first: 0, count: 8, quant: { format: 'int8', group: 48, zeros: false, fallback: true } },
  ];
  for (const c of cases) checkExperts(c);
  assert.deepEqual(cases.map((c) => expertTileRows(c.tokens, c.topK, c.experts)), [1, 1, 1, 3, 8, 5, 16, 32, 64, 128, 1, 16], 'the cases cover every path');
});

test('act-order experts (a column order per expert, their inputs gathered into it) on every path and the dequantizing fallback equal the CPU', () => {
  const silu: Activation = { kind: 'silu' };
  const gptq = { format: 'int4', group: 128, zeros: true, actOrder: true } as const;
  const cases: ExpertCase[] = [
    // One token (fused down + sum) at Qwen3-30B-A3B's expert shape; decode GEMVs with an expert shard; GEMM tiles of 16 to 128 rows.
    { tokens: 1, experts: 32, topK: 8, hidden: 2048, n: 768, biased: false, activation: silu, first: 0, count: 32, quant: gptq },
    { tokens: 4, experts: 16, topK: 4, hidden: 512, n: 256, biased: false, activation: silu, first: 3, count: 10, quant: { format: 'int8', group: 32, zeros: false, actOrder: true } },
    { tokens: 20, experts: 64, topK: 8, hidden: 512, n: 256, biased: true, activation: silu, first: 0, count: 64, quant: gptq },
    { tokens: 100, experts: 16, topK: 4, hidden: 256, n: 160, biased: false, activation: ACTIVATIONS[1], first: 0, count: 16, quant: { format: 'int4', group: 32, zeros: false, actOrder: true } },
    { tokens: 200, experts: 8, topK: 2, hidden: 512, n: 96, biased: false, activation: silu, first: 2, count: 5, quant: { format: 'int8', group: 32, zeros: true, actOrder: true } },
    { tokens: 300, experts: 4, topK: 2, hidden: 128, n: 512, biased: false, activation: silu, first: 0, count: 4, quant: gptq },
    // Shapes the kernels do not take, dequantized with each expert's order: int4 rows of 16 columns (one token), int8 groups of 48 (a prefill).
    { tokens: 1, experts: 8, topK: 2, hidden: 64, n: 16, biased: false, activation: silu, first: 0, count: 8, quant: { ...gptq, fallback: true } },
    { tokens: 40, experts: 8, topK: 2, hidden: 96, n: 48, biased: false, activation: silu, first: 0, count: 8, quant: { format: 'int8', group: 48, zeros: false, actOrder: true, fallback: true } },
  ];
  for (const c of cases) checkExperts(c);
  assert.deepEqual(cases.map((c) => expertTileRows(c.tokens, c.topK, c.experts)), [1, 4, 16, 32, 64, 128, 1, 16], 'the cases cover every path');
});

test('expertMlp over random shapes, activations, biases and expert shards', () => {
  for (let trial = 0; trial < 30; trial++) {
    const experts = randInt(rng, 4, 128);
    const topK = randInt(rng, 1, Math.min(8, experts));
    const tokens = rng() < 0.4 ? randInt(rng, 1, GEMV_MAX_TOKENS) : randInt(rng, GEMV_MAX_TOKENS + 1, 300);
    const sharded = rng() < 0.3;
    const first = sharded ? randInt(rng, 0, experts - 1) : 0;
    const count = sharded ? randInt(rng, 1, experts - first) : experts;
    checkExperts({
      tokens,
      experts,
      topK,
      // Weights stay under ~50 MB: a few experts may be wide, many experts narrow.
      hidden: 8 * randInt(rng, 1, experts > 32 ? 32 : 96),
      n: 8 * randInt(rng, 1, experts > 32 ? 24 : 64),
      biased: rng() < 0.5,
      activation: pick(rng, ACTIVATIONS),
      first,
      count,
    });
  }
});

interface MoeCase {
  what: string;
  experts: number;
  topK: number;
  hidden: number;
  n: number;
  /** The shared expert's width (0: none) and whether a sigmoid gate scales it. */
  m: number;
  sharedGate: boolean;
  params: Omit<RoutingParams, 'selectionBias'>;
  selectionBias: boolean;
  routerBias: boolean;
  biased: boolean;
  activation: Activation;
  first: number;
  count: number;
  /** Routed experts in MXFP4 (no shared expert). */
  mxfp4?: boolean;
}

/** A block's weights on both backends: random, with x redrawn until the routing is decided by a clear margin. */
function moeBlock(c: MoeCase): { cpu: MoeWeights; gpu: MoeWeights; x: Pair } {
  const { experts, hidden, m } = c;
  const router = randomPair([experts, hidden], 3 / Math.sqrt(hidden));
  const routerBias = c.routerBias ? randomPair([experts], 0.5) : null;
  const biasValues = c.selectionBias ? randomBf16Values(rng, experts, 0.5) : null;
  const selection = biasValues === null ? null : bf16Pair([experts], biasValues, { gpuFloat32: true });
  const params: RoutingParams = { ...c.params, selectionBias: null };
  let x: Pair;
  let margin: number;
  do {
    x = randomPair([1, hidden], 1);
    const logits = cpu.toHost(cpu.linear(x.cpu, router.cpu, routerBias?.cpu ?? null, { float32: true }));
    margin = routingMargin(logits, params, biasValues);
  } while (margin < MIN_MARGIN);
  const routed = expertWeights({ tokens: 1, experts, topK: c.topK, hidden, n: c.n, biased: c.biased, activation: c.activation, first: c.first, count: c.count, mxfp4: c.mxfp4 });
  const sharedGateUp = m > 0 ? randomPair([2 * m, hidden], 3 / Math.sqrt(hidden)) : null;
  const sharedDown = m > 0 ? randomPair([hidden, m], 1 / Math.sqrt(m)) : null;
  const sharedGate = c.sharedGate ? randomPair([1, hidden], 3 / Math.sqrt(hidden)) : null;
  const side = (k: 'cpu' | 'gpu'): MoeWeights => ({
    router: router[k],
    routerBias: routerBias?.[k] ?? null,
    routing: { ...c.params, selectionBias: selection?.[k] ?? null },
    experts: routed[k],
    activation: c.activation,
    shared: sharedGateUp === null ? null : { gateUp: sharedGateUp[k], down: sharedDown![k], gate: sharedGate?.[k] ?? null, activation: c.activation },
  });
  return { cpu: side('cpu'), gpu: side('gpu'), x };
}

const SOFTMAX = (topK: number, normalize: boolean): Omit<RoutingParams, 'selectionBias'> => ({ topK, scoring: 'softmax', groups: null, normalize, scale: 1 });
const PLAIN = { m: 0, sharedGate: false, selectionBias: false, routerBias: false, biased: false, activation: { kind: 'silu' } as Activation };

// One token through the fused kernel: the benchmark models' shapes (narrowed where weights would
// be large: the host makes every weight), then the options each family adds. Expert counts give
// PER_LANE 1, 2 and 4 only, and six builds of the kernel in all (one of them MXFP4).
const MOE_CASES: Omit<MoeCase, 'first' | 'count'>[] = [
  { ...PLAIN, what: 'Qwen3-30B-A3B rows (16 of its 128 experts)', experts: 16, topK: 8, hidden: 2048, n: 768, params: SOFTMAX(8, true) },
  { ...PLAIN, what: 'DeepSeek-V2-Lite-like, shared experts 2n wide', experts: 8, topK: 6, hidden: 1024, n: 1408, m: 2816, params: SOFTMAX(6, false) },
  { ...PLAIN, what: 'Qwen2-MoE-like, gated shared expert 4n wide', experts: 60, topK: 4, hidden: 512, n: 176, m: 704, sharedGate: true, params: SOFTMAX(4, false) },
  {
    ...PLAIN,
    what: 'gpt-oss-like: router bias, top-k softmax, biases, clamped SwiGLU, hidden not a multiple of 256',
    experts: 32,
    topK: 4,
    hidden: 360,
    n: 360,
    routerBias: true,
    biased: true,
    activation: ACTIVATIONS[2],
    params: { topK: 4, scoring: 'topk-softmax', groups: null, normalize: false, scale: 1 },
  },
  {
    ...PLAIN,
    what: 'DeepSeek-V3-like: sigmoid, selection bias, groups, scale, shared expert',
    experts: 64,
    topK: 8,
    hidden: 256,
    n: 64,
    m: 128,
    selectionBias: true,
    params: { topK: 8, scoring: 'sigmoid', groups: { numGroups: 8, topkGroups: 4, score: 'top2-sum' }, normalize: true, scale: 2.5 },
  },
  {
    ...PLAIN,
    what: 'Laguna-like: router logits soft-capped, sigmoid with a selection bias, renormalized, scaled, shared expert',
    experts: 32,
    topK: 4,
    hidden: 128,
    n: 64,
    m: 64,
    selectionBias: true,
    params: { topK: 4, scoring: 'sigmoid', groups: null, normalize: true, scale: 1.5, logitSoftcap: 4 },
  },
  { ...PLAIN, what: 'a shared expert narrower than n, gelu-tanh', experts: 16, topK: 2, hidden: 264, n: 256, m: 136, activation: ACTIVATIONS[1], params: SOFTMAX(2, true) },
  { ...PLAIN, what: 'thirteen lane groups per row (top-8 and a shared expert 5n wide)', experts: 128, topK: 8, hidden: 128, n: 32, m: 160, params: SOFTMAX(8, true) },
  {
    ...PLAIN,
    what: 'gpt-oss in MXFP4: its hidden size 2880 (90 blocks), router bias, top-k softmax, biases, clamped SwiGLU',
    experts: 8,
    topK: 4,
    hidden: 2880,
    n: 1440,
    routerBias: true,
    biased: true,
    activation: ACTIVATIONS[2],
    params: { topK: 4, scoring: 'topk-softmax', groups: null, normalize: false, scale: 1 },
    mxfp4: true,
  },
];

function checkMoe(c: MoeCase): void {
  const block = moeBlock(c);
  const expected = cpu.toHost(cpu.moe(block.x.cpu, block.cpu));
  const fused = gpu.toHost(gpu.moe(block.x.gpu, block.gpu));
  const split = gpu.toHost(composeMoe(gpu, block.x.gpu, block.gpu));
  const what = `${c.what}, experts ${c.first}..${c.first + c.count - 1} held`;
  assert.ok(relativeError(fused, expected) < TOLERANCE, `${what}: relative error ${relativeError(fused, expected)} against the CPU`);
  // The two GPU paths round alike and differ only in f32 summation order.
  assert.ok(relativeError(fused, split) < TOLERANCE / 4, `${what}: relative error ${relativeError(fused, split)} against the split path`);
}

test('moe of one token in the fused decode kernel equals the CPU and the split path', () => {
  for (const c of MOE_CASES) checkMoe({ ...c, first: 0, count: c.experts });
});

test('moe of one token with an expert shard: slots held elsewhere add nothing', () => {
  for (const c of [MOE_CASES[1], MOE_CASES[4], MOE_CASES[7]]) {
    const first = randInt(rng, 1, c.experts - 2);
    checkMoe({ ...c, what: `${c.what}, sharded`, first, count: randInt(rng, 1, c.experts - first) });
  }
});

test('addInto adds the rows, scaled by σ(gate) when a gate is given', () => {
  for (const gated of [false, true]) {
    const rows = randInt(rng, 1, 70);
    const cols = 8 * randInt(rng, 1, 300);
    const target = randomPair([rows, cols], 2);
    const x = randomPair([rows, cols], 2);
    const gate = gated ? randomPair([rows, 1], 4) : null;
    cpu.addInto(target.cpu, x.cpu, gate?.cpu ?? null);
    gpu.addInto(target.gpu, x.gpu, gate?.gpu ?? null);
    const err = relativeError(gpu.toHost(target.gpu), cpu.toHost(target.cpu));
    assert.ok(err < TOLERANCE, `addInto ${rows}x${cols}${gated ? ' gated' : ''}: relative error ${err}`);
  }
});

/** Overwrites a tensor made by loadWeight with new bf16 values, in place on the device. */
function overwrite(t: Tensor, values: Float32Array): void {
  assert.ok(t instanceof CudaTensor && t.dtype === 'bf16');
  gpu.device.uploadSync(t.ptr, Uint16Array.from(values, (v) => floatToBf16Bits(v)));
}

test('a decode-sized MoE call replayed from a CUDA graph equals the eager call, for new inputs too', () => {
  for (const tokens of [1, 4, 16]) {
    const [experts, topK, hidden, n] = [64, 6, 256, 128];
    const params: RoutingParams = { topK, scoring: 'softmax', selectionBias: null, groups: null, normalize: true, scale: 1 };
    const weights = expertWeights({ tokens, experts, topK, hidden, n, biased: true, activation: { kind: 'silu' }, first: 0, count: experts }).gpu;
    const logits = gpu.loadWeight(bf16Tensor([tokens, experts], decisiveLogits(tokens, experts, params, null, 3)));
    const x = gpu.loadWeight(bf16Tensor([tokens, hidden], randomBf16Values(rng, tokens * hidden, 1)));
    const batch = buildBatch([{ cached: 0, query: tokens }], new BlockAssignment(rng, 64, 1), 16);
    const moe = () => gpu.expertMlp(x, gpu.routeExperts(logits, params), weights, { kind: 'silu' });
    gpu.beginStep(batch);
    let recorded: Tensor | null = null;
    const graph = gpu.captureGraph(() => {
      recorded = moe();
    });
    try {
      for (let round = 0; round < 3; round++) {
        if (round > 0) {
          overwrite(logits, decisiveLogits(tokens, experts, params, null, 3));
          overwrite(x, randomBf16Values(rng, tokens * hidden, 1));
        }
        graph.replay();
        const replayed = gpu.toHost(recorded!);
        // The eager call after a reset takes the same arena addresses: read the replay first.
        gpu.beginStep(batch);
        const eager = gpu.toHost(moe());
        assert.ok(eager.every((v) => Number.isFinite(v)), `${tokens} tokens: eager output is finite`);
        assert.deepEqual(replayed, eager, `${tokens} tokens, round ${round}`);
      }
    } finally {
      graph.dispose();
    }
  }
});

test('three fused MoE blocks replayed from one CUDA graph equal the eager calls, for new inputs too', () => {
  // Back to back, as a model's layers run: each launch must leave its barrier counters at zero for the next.
  const blocks = [MOE_CASES[1], MOE_CASES[4], MOE_CASES[2]].map((c) => moeBlock({ ...c, hidden: 512, first: 0, count: c.experts }).gpu);
  const x = gpu.loadWeight(bf16Tensor([1, 512], randomBf16Values(rng, 512, 1)));
  const forward = (b: Backend) => blocks.reduce<Tensor>((h, w) => b.moe(h, w), x);
  const batch = buildBatch([{ cached: 0, query: 1 }], new BlockAssignment(rng, 64, 1), 16);
  gpu.beginStep(batch);
  let recorded: Tensor | null = null;
  const graph = gpu.captureGraph(() => {
    recorded = forward(gpu);
  });
  try {
    for (let round = 0; round < 4; round++) {
      if (round > 0) overwrite(x, randomBf16Values(rng, 512, 1));
      graph.replay();
      const replayed = gpu.toHost(recorded!);
      gpu.beginStep(batch);
      const eager = gpu.toHost(forward(gpu));
      assert.ok(eager.every((v) => Number.isFinite(v)), `round ${round}: eager output is finite`);
      assert.deepEqual(replayed, eager, `round ${round}`);
    }
  } finally {
    graph.dispose();
  }
});
