import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import type { Activation, Tensor } from '../../../src/backend/backend.ts';
import type { HostTensor } from '../../../src/tensor/host-tensor.ts';
import { CpuBackend } from '../../../src/backend/cpu/cpu-backend.ts';
import { CpuKvCache } from '../../../src/backend/cpu/cpu-tensor.ts';
import { DEFAULT_ENGINE_CONFIG } from '../../../src/config.ts';
import { CudaBackend } from '../../../src/backend/cuda/cuda-backend.ts';
import { CudaKvCache, CudaTensor } from '../../../src/backend/cuda/cuda-tensor.ts';
import { testDraw } from '../../helpers/sampling-draw.ts';
import { attentionLayout, plainAttention } from '../../helpers/kv-layout.ts';
import { floatToBf16Bits } from '../../../src/tensor/host-dtype.ts';
import { BlockAssignment, bf16Tensor, bf16Value, buildBatch, randomBf16Values, ropeTables, seededRng } from '../../../src/bench/synthetic-batch.ts';
import { pick, randInt, relativeError, testSeed } from '../../helpers/gpu-test-support.ts';

// Every elementwise, norm and GEMM op of the CUDA backend against the CPU backend on random shapes.
// Inputs are bf16-representable, so both start from the same values; bf16 outputs get 1e-2.

const rng = seededRng(testSeed('cuda ops'));
const gpu = new CudaBackend({ arenaBytes: 64 * 1024 * 1024 });
const cpu = new CpuBackend();
after(() => gpu.dispose());

const TOLERANCE = 1e-2;

interface Pair {
  cpu: Tensor;
  gpu: Tensor;
}

function load(t: HostTensor): Pair {
  return { cpu: cpu.loadWeight(t), gpu: gpu.loadWeight(t) };
}

function randomWeight(shape: number[], scale = 1): Pair {
  return load(bf16Tensor(shape, randomBf16Values(rng, shape.reduce((a, b) => a * b, 1), scale)));
}

/**
 * Random [rows, cols] activations. Any tensor is a valid op input, so a loaded one serves (and
 * stays valid across the arena resets of beginStep).
 */
function activation(rows: number, cols: number, scale = 1): Pair {
  return randomWeight([rows, cols], scale);
}

function assertClose(what: string, pair: Pair, tolerance = TOLERANCE): void {
  const err = relativeError(gpu.toHost(pair.gpu), cpu.toHost(pair.cpu));
  assert.ok(err < tolerance, `${what}: relative error ${err}`);
}

test('the KV budget leaves the activation reserve and headroom free', () => {
  const { total } = gpu.device.memInfo();
  const budget = gpu.kvCacheBudgetBytes({ ...DEFAULT_ENGINE_CONFIG, gpuMemoryUtilization: 0.5 });
  assert.ok(budget > 0 && budget < 0.5 * total, `budget ${budget} of ${total}`);
});

test('loadWeight keeps bf16 exactly and rounds f32 and f16 to nearest-even bf16', () => {
  const n = randInt(rng, 1, 5000);
  const values = randomBf16Values(rng, n, 4);
  assert.deepEqual(gpu.toHost(gpu.loadWeight(bf16Tensor([n], values))), values);

  const raw = Float32Array.from({ length: n }, () => (rng() * 2 - 1) * 100);
  const rounded = raw.map((v) => bf16Value(floatToBf16Bits(v)));
  const f32: HostTensor = { dtype: 'f32', shape: [n], data: new Uint8Array(raw.buffer) };
  assert.deepEqual(gpu.toHost(gpu.loadWeight(f32)), rounded);

  // Multiples of 1/256 below 8 are exact in f16 but need rounding to bf16.
  const halves = Float32Array.from({ length: n }, () => randInt(rng, -2047, 2047) / 256);
  const f16 = new Uint8Array(n * 2);
  halves.forEach((v, i) => new DataView(f16.buffer).setUint16(i * 2, f16Bits(v), true));
  assert.deepEqual(gpu.toHost(gpu.loadWeight({ dtype: 'f16', shape: [n], data: f16 })), halves.map((v) => bf16Value(floatToBf16Bits(v))));
});

test('embedding and gatherLogitsRows copy rows exactly', () => {
  for (let trial = 0; trial < 5; trial++) {
    const vocab = randInt(rng, 10, 3000);
    const hidden = 8 * randInt(rng, 1, 300);
    const table = randomWeight([vocab, hidden]);
    const specs = Array.from({ length: randInt(rng, 1, 6) }, () => ({ cached: 0, query: randInt(rng, 1, 40) }));
    const batch = buildBatch(specs, new BlockAssignment(rng, 64, specs.length), 16);
    batch.tokenIds = Int32Array.from({ length: batch.numTokens }, () => randInt(rng, 0, vocab - 1));
    const steps = [cpu.beginStep(batch), gpu.beginStep(batch)] as const;
    const x = { cpu: cpu.embedding(table.cpu, steps[0], 1, 0), gpu: gpu.embedding(table.gpu, steps[1], 1, 0) };
    const scaled = { cpu: cpu.embedding(table.cpu, steps[0], 1.5, 0), gpu: gpu.embedding(table.gpu, steps[1], 1.5, 0) };
    assertClose(`scaled embedding ${vocab}x${hidden}`, scaled);
    assert.deepEqual(gpu.toHost(x.gpu), cpu.toHost(x.cpu), `embedding ${vocab}x${hidden}`);
    const rows = { cpu: cpu.gatherLogitsRows(x.cpu, steps[0]), gpu: gpu.gatherLogitsRows(x.gpu, steps[1]) };
    assert.deepEqual(gpu.toHost(rows.gpu), cpu.toHost(rows.cpu), 'logits rows');
  }
});

test('embedding reads tokens named by tokenSources from the latest sampling pass, as the CPU does', () => {
  const vocab = 700;
  const hidden = 64;
  const table = randomWeight([vocab, hidden]);
  // Sample 5 rows greedily: row r's largest logit is at a random column.
  const winners = Array.from({ length: 5 }, () => randInt(rng, 0, vocab - 1));
  const logits = new Float32Array(5 * vocab).fill(-1);
  winners.forEach((w, r) => (logits[r * vocab + w] = 5));
  const x = load(bf16Tensor([5, vocab], logits));
  const greedy = winners.map((_, row) => testDraw({ row, temperature: 0 }));
  assert.deepEqual([...gpu.sampleRows(x.gpu, greedy).read().tokenIds], winners);
  cpu.sampleRows(x.cpu, greedy);
  const specs = [{ cached: 3, query: 1 }, { cached: 0, query: 4 }, { cached: 7, query: 1 }];
  const batch = buildBatch(specs, new BlockAssignment(rng, 64, specs.length), 16);
  batch.tokenIds = Int32Array.from({ length: batch.numTokens }, () => randInt(rng, 0, vocab - 1));
  // The two decodes read draws 4 and 1 instead of their token ids.
  batch.tokenSources = new Int32Array(batch.numTokens).fill(-1);
  batch.tokenSources[0] = 4;
  batch.tokenSources[batch.numTokens - 1] = 1;
  batch.tokenIds[0] = -1;
  batch.tokenIds[batch.numTokens - 1] = -1;
  const embedded = { cpu: cpu.embedding(table.cpu, cpu.beginStep(batch), 1, 0), gpu: gpu.embedding(table.gpu, gpu.beginStep(batch), 1, 0) };
  const host = gpu.toHost(embedded.gpu);
  assert.deepEqual(host, cpu.toHost(embedded.cpu));
  const tableRow = (id: number) => [...cpu.toHost(table.cpu).subarray(id * hidden, (id + 1) * hidden)];
  assert.deepEqual([...host.subarray(0, hidden)], tableRow(winners[4]));
  batch.tokenSources[0] = 5;
  assert.throws(() => gpu.embedding(table.gpu, gpu.beginStep(batch), 1, 0), /token source 5 is outside the 5 draws of the last sampling pass/);
});

test('rmsNorm and addRmsNorm (output and in-place residual)', () => {
  for (let trial = 0; trial < 6; trial++) {
    const rows = randInt(rng, 1, 70);
    const cols = 8 * randInt(rng, 1, 1100);
    const eps = 1e-6;
    const x = activation(rows, cols, 3);
    const residual = activation(rows, cols, 3);
    const w = randomWeight([cols], 2);
    assertClose(`rmsNorm ${rows}x${cols}`, { cpu: cpu.rmsNorm(x.cpu, w.cpu, eps), gpu: gpu.rmsNorm(x.gpu, w.gpu, eps) });
    const out = { cpu: cpu.addRmsNorm(x.cpu, residual.cpu, w.cpu, eps), gpu: gpu.addRmsNorm(x.gpu, residual.gpu, w.gpu, eps) };
    assertClose(`addRmsNorm out ${rows}x${cols}`, out);
    assertClose(`addRmsNorm residual ${rows}x${cols}`, residual);
  }
});

test('layerNorm over whole rows and over each head with its own weights (and biases, on alternate trials), around a far-off mean', () => {
  for (let trial = 0; trial < 6; trial++) {
    const rows = randInt(rng, 1, 70);
    const width = 8 * randInt(rng, 1, trial < 3 ? 1100 : 32);
    const cols = width * (trial < 3 ? 1 : randInt(rng, 2, 8));
    // Values around 20 (bf16 steps of 1/8 there): the mean must come off before the variance is taken.
    const x = load(bf16Tensor([rows, cols], randomBf16Values(rng, rows * cols, 3).map((v) => bf16Value(floatToBf16Bits(v + 20)))));
    const w = randomWeight([cols], 2);
    const bias = trial % 2 === 0 ? null : randomWeight([cols], 2);
    const out = { cpu: cpu.layerNorm(x.cpu, w.cpu, bias?.cpu ?? null, 1e-5, width), gpu: gpu.layerNorm(x.gpu, w.gpu, bias?.gpu ?? null, 1e-5, width) };
    assertClose(`layerNorm ${rows}x${cols} in groups of ${width}${bias === null ? '' : ' with bias'}`, out);
  }
});

test('linear with and without bias over odd and GEMV shapes', () => {
  const shapes = [
    [1, 64, 128],
    [1, 4096, 1024],
    [3, 576, 1000],
    [37, 2048, 3072],
    [130, 128, 24],
    // 1 and 2 rows run the GEMV kernel: a warp per row from 8192 rows on, else four per row.
    [2, 1024, 300],
    [1, 14336, 64],
    [2, 4096, 520],
    [1, 256, 8200],
    [2, 72, 9001],
    [3, 512, 256],
    // Routers over a few experts: rows too narrow for 16-byte bias chunks past the GEMV's row counts.
    [40, 64, 4],
    [17, 2048, 6],
  ];
  for (const [m, k, n] of shapes) {
    const x = activation(m, k);
    const w = randomWeight([n, k], 1 / Math.sqrt(k));
    assertClose(`linear ${m}x${k}x${n}`, { cpu: cpu.linear(x.cpu, w.cpu, null), gpu: gpu.linear(x.gpu, w.gpu, null) });
    const b = randomWeight([n]);
    assertClose(`linear+bias ${m}x${k}x${n}`, { cpu: cpu.linear(x.cpu, w.cpu, b.cpu), gpu: gpu.linear(x.gpu, w.gpu, b.gpu) });
  }
});

test('linear with a float32 output (MoE routers) keeps the f32 sums and bias unrounded on the GEMV and cuBLAS paths', () => {
  // The CPU's sums are float64 rounded once; the GPU's f32 sums differ by accumulation order only,
  // ~1e-6 relative, where rounding the output to bf16 alone would be ~1e-3.
  const tolerance = 3e-5;
  const hiddens = [2048, 64, 2880];
  const shapes: [number, number, number][] = [];
  for (const rows of [1, 2, 3, 64]) for (const experts of [4, 8, 60, 128, 256]) shapes.push([rows, hiddens[shapes.length % hiddens.length], experts]);
  // A GEMV of a warp per row (8192 rows on), which no router has but the option allows.
  shapes.push([1, 256, 8200]);
  for (const [m, k, n] of shapes) {
    const x = activation(m, k);
    const w = randomWeight([n, k], 1 / Math.sqrt(k));
    const b = randomWeight([n]);
    for (const bias of [null, b]) {
      const what = `f32 linear ${m}x${k}x${n}${bias === null ? '' : '+bias'}`;
      const out = gpu.linear(x.gpu, w.gpu, bias?.gpu ?? null, { float32: true });
      assert.ok(out instanceof CudaTensor && out.dtype === 'f32', `${what}: output dtype`);
      assertClose(what, { cpu: cpu.linear(x.cpu, w.cpu, bias?.cpu ?? null, { float32: true }), gpu: out }, tolerance);
    }
  }
});

test('gatedLinear with silu, gelu-tanh, clamped SwiGLU, gelu and relu, fused (1-2 rows) and as GEMM + activation', () => {
  // Products reach about ±12, so the SwiGLU's clamp at 7 and gelu's negative tail are both exercised.
  const activations: Activation[] = [{ kind: 'silu' }, { kind: 'gelu-tanh' }, { kind: 'clamped-swiglu', alpha: 1.702, limit: 7 }, { kind: 'gelu' }, { kind: 'relu' }];
  for (const act of activations) {
    // The fused GEMV shares a row among four warps below 8192 outputs, and gives each a warp above.
    for (const rows of [1, 2, 3, 40]) {
      for (const n of [8 * randInt(rng, 1, 1000), 8200]) {
        const k = 8 * randInt(rng, 1, 300);
        const x = activation(rows, k);
        const w = randomWeight([2 * n, k], 12 / Math.sqrt(k));
        assertClose(`gatedLinear ${act.kind} ${rows}x${k} -> ${n}`, { cpu: cpu.gatedLinear(x.cpu, w.cpu, act), gpu: gpu.gatedLinear(x.gpu, w.gpu, act) });
      }
    }
  }
});

test('gatedLinear and a bias over more rows than a grid is high (65,535), as a long prefill chunk has', () => {
  const rows = 70_001;
  const x = activation(rows, 16);
  const w = randomWeight([2 * 8, 16], 12 / 4);
  assertClose(`gatedLinear silu ${rows}x16 -> 8`, { cpu: cpu.gatedLinear(x.cpu, w.cpu, { kind: 'silu' }), gpu: gpu.gatedLinear(x.gpu, w.gpu, { kind: 'silu' }) });
  const lw = randomWeight([8, 16], 1 / 4);
  const b = randomWeight([8]);
  assertClose(`linear+bias ${rows}x16x8`, { cpu: cpu.linear(x.cpu, lw.cpu, b.cpu), gpu: gpu.linear(x.gpu, lw.gpu, b.gpu) });
});

test('softcap caps every element in place, whatever the tensor\'s size', () => {
  for (const [rows, cols] of [[1, 7], [3, 256], [5, 262144], [1, 1]]) {
    const cap = pick(rng, [10, 30]);
    const x = activation(rows, cols, 4 * cap);
    cpu.softcap(x.cpu, cap);
    gpu.softcap(x.gpu, cap);
    assertClose(`softcap ${rows}x${cols} at ${cap}`, x);
  }
});

test('scale multiplies every element in place, whatever the tensor\'s size', () => {
  for (const [rows, cols] of [[1, 7], [3, 256], [5, 262144], [1, 1]]) {
    const factor = pick(rng, [0.22, 1 / 8, 12]);
    const x = activation(rows, cols);
    cpu.scale(x.cpu, factor);
    gpu.scale(x.gpu, factor);
    assertClose(`scale ${rows}x${cols} by ${factor}`, x);
  }
});

test('xielu applies Apertus\'s activation in place, on both sides of zero, whatever the tensor\'s size', () => {
  for (const [rows, cols] of [[1, 7], [3, 256], [5, 262144], [1, 1]]) {
    const params = { alphaP: pick(rng, [0.8, 3.1]), alphaN: pick(rng, [0.8, 1.7]), beta: 0.5, eps: -1e-6 };
    // Values to ±6: the negative branch saturates at -1 - x there, the positive one grows as x².
    const x = activation(rows, cols, 6);
    cpu.xielu(x.cpu, params);
    gpu.xielu(x.gpu, params);
    assertClose(`xielu ${rows}x${cols} ${JSON.stringify(params)}`, x);
  }
});

test('copyBlocks copies whole blocks of every layer, keys and values', () => {
  const spec = { numLayers: 3, numBlocks: 24, blockSize: 16, numKvHeads: 2, headDim: 64 };
  const caches = { cpu: cpu.createKvCache(attentionLayout(spec)), gpu: gpu.createKvCache(attentionLayout(spec)) };
  const shape = plainAttention({ numHeads: 4, numKvHeads: 2, headDim: 64, scale: 0.125, slidingWindow: null });
  const rope = { cpu: cpu.uploadRopeTable(ropeTables(256, 64)), gpu: gpu.uploadRopeTable(ropeTables(256, 64)) };
  const blocks = new BlockAssignment(rng, spec.numBlocks, 1);
  const batch = buildBatch([{ cached: 0, query: 70 }], blocks, spec.blockSize);
  const steps = [cpu.beginStep(batch), gpu.beginStep(batch)] as const;
  const table = randomWeight([70, 8 * 64]);
  for (let layer = 0; layer < spec.numLayers; layer++) {
    cpu.ropeAndCacheWrite(cpu.embedding(table.cpu, steps[0], 1, 0), rope.cpu, caches.cpu, layer, steps[0], shape);
    gpu.ropeAndCacheWrite(gpu.embedding(table.gpu, steps[1], 1, 0), rope.gpu, caches.gpu, layer, steps[1], shape);
  }
  const used = blocks.tables[0];
  const unused = Array.from({ length: spec.numBlocks }, (_, i) => i).filter((b) => !used.includes(b));
  const src = Int32Array.from(used.slice(0, 3));
  const dst = Int32Array.from(unused.slice(0, 3));
  cpu.copyBlocks(caches.cpu, src, dst);
  gpu.copyBlocks(caches.gpu, src, dst);

  const kvGpu = caches.gpu as CudaKvCache;
  const kvCpu = caches.cpu as CpuKvCache;
  const width = spec.blockSize * spec.numKvHeads * spec.headDim;
  const blockBytes = width * 2;
  for (let layer = 0; layer < spec.numLayers; layer++) {
    for (const [pool, cpuPool] of [
      [kvGpu.keys(layer), kvCpu.pools[layer][0].codes as Float32Array],
      [kvGpu.values(layer), kvCpu.pools[layer][1].codes as Float32Array],
    ] as const) {
      for (let i = 0; i < src.length; i++) {
        const copied = readBf16Block(pool + dst[i] * blockBytes, width);
        assert.deepEqual(copied, readBf16Block(pool + src[i] * blockBytes, width), `layer ${layer} block ${src[i]} -> ${dst[i]}`);
        const err = relativeError(copied, cpuPool.subarray(dst[i] * width, (dst[i] + 1) * width));
        assert.ok(err < TOLERANCE, `layer ${layer} block ${dst[i]} vs CPU: ${err}`);
      }
    }
  }
});

function readBf16Block(ptr: number, n: number): Float32Array {
  const bits = new Uint16Array(n);
  gpu.device.download(bits, ptr);
  return Float32Array.from(bits, (b) => bf16Value(b));
}

function f16Bits(x: number): number {
  if (x === 0) return 0;
  const sign = x < 0 ? 0x8000 : 0;
  const a = Math.abs(x);
  let e = Math.floor(Math.log2(a));
  if (e < -14) e = -14;
  const mantissa = a / 2 ** e;
  if (mantissa < 1) return sign | Math.round(a / 2 ** -24);
  return sign | ((e + 15) << 10) | Math.round((mantissa - 1) * 1024);
}

