import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import type { IndexerParams, KvCache, MlaParams, Tensor } from '../../../src/backend/backend.ts';
import { CpuBackend, CpuTokenSelection } from '../../../src/backend/cpu/cpu-backend.ts';
import { asCpuKvCache } from '../../../src/backend/cpu/cpu-tensor.ts';
import { loadSlot } from '../../../src/backend/cpu/ops/kv-codes.ts';
import { CudaBackend, CudaTokenSelection } from '../../../src/backend/cuda/cuda-backend.ts';
import type { CudaKvCache } from '../../../src/backend/cuda/cuda-tensor.ts';
import { BlockAssignment, bf16Tensor, buildBatch, randomBf16Values, ropeTables, seededRng, type SeqSpec } from '../../../src/bench/synthetic-batch.ts';
import { describeBatch, type BatchDescription } from '../../../src/step/batch.ts';
import type { KvCacheDtype, KvCacheLayout } from '../../../src/step/kv-cache-layout.ts';
import { float32Tensor } from '../../../src/tensor/host-ops.ts';
import { fp8E4m3Values } from '../../../src/tensor/quantized-weight.ts';
import { kvCodeTolerance, randInt, relativeError, testSeed } from '../../helpers/gpu-test-support.ts';

// DeepSeek-V3.2's sparse attention on the GPU against the CPU twins: the indexer's key write
// (lightning-indexer.cu indexer_key_write_kernel, then kv-quantize.cu for an 8-bit cache), its
// top-k (indexer_topk_kernel: scores, radix select, ordered compaction) and MLA over each token's
// selected rows (sparse-mla.cu), over prefill chunks then decodes and chunks mixed in one step,
// with a bf16, fp8 and int8 cache (the latent rows and indexer keys both in its dtype; the keys as
// cached are compared too: 8-bit keys code for code, since both backends quantize the float32 key
// (LayerNorm and rotation in float32 on the GPU, float64 on the CPU), so a code may differ only
// where the quotient sits within a few float32 ulps of a midpoint: at most one in
// CODE_DIFFERENCES, each one step apart, the scales within SCALE_TOLERANCE). bf16 scores may order two positions
// whose float64 scores are nearly equal the other way: a GPU choice is accepted when it keeps the
// right number of visible positions, in order, each scoring (in float64, over the keys the GPU
// cache holds) within SCORE_TOLERANCE of the k-th best. Sparse MLA is compared over one
// selection, the CPU's, given to both. Last, the keys as cached (8-bit: codes and scales) must move
// with their blocks: copy-on-write, swaps and copySlots.

const rng = seededRng(testSeed('cuda lightning indexer'));
const gpu = new CudaBackend({ poisonStepTensors: true });
const cpu = new CpuBackend();
after(() => gpu.dispose());

const TOLERANCE = 1e-2;
const SCORE_TOLERANCE = 3e-2;
const CODE_DIFFERENCES = 1000;
const SCALE_TOLERANCE = 1e-5;

interface Pair {
  cpu: Tensor;
  gpu: Tensor;
}

function randomPair(shape: number[], scale = 1): Pair {
  const host = bf16Tensor(shape, randomBf16Values(rng, shape.reduce((a, b) => a * b, 1), scale));
  return { cpu: cpu.loadWeight(host), gpu: gpu.loadWeight(host) };
}

function assertClose(what: string, actual: Tensor, expected: Tensor): void {
  const err = relativeError(gpu.toHost(actual), cpu.toHost(expected));
  assert.ok(err < TOLERANCE, `${what}: relative error ${err}`);
}

interface Shape {
  mla: MlaParams;
  indexer: IndexerParams;
}

function shape(heads: number, latent: number, rope: number, indexHeads: number, indexDim: number, topK: number): Shape {
  return {
    mla: { numHeads: heads, latentDim: latent, ropeDim: rope, nopeDim: 16, scale: (16 + rope) ** -0.5 },
    indexer: { numHeads: indexHeads, headDim: indexDim, ropeDim: rope, topK, scale: indexDim ** -0.5, weightScale: indexHeads ** -0.5 },
  };
}

/** Index scores of token t over its visible positions from `keys` [slots, headDim] (float64). */
function scoresOver(keys: Float32Array, blockSize: number, q: Float32Array, weights: Float32Array, batch: BatchDescription, t: number, indexer: IndexerParams): number[] {
  const { numHeads, headDim } = indexer;
  let s = 0;
  while (batch.queryStartLoc[s + 1] <= t) s++;
  return Array.from({ length: batch.positions[t] + 1 }, (_, j) => {
    const slot = batch.blockTables[s * batch.maxBlocksPerSeq + Math.floor(j / blockSize)] * blockSize + (j % blockSize);
    let total = 0;
    for (let h = 0; h < numHeads; h++) {
      let dot = 0;
      for (let d = 0; d < headDim; d++) dot += q[(t * numHeads + h) * headDim + d] * keys[slot * headDim + d];
      total += indexer.weightScale * weights[t * numHeads + h] * Math.max(0, indexer.scale * dot);
    }
    return total;
  });
}

/** An 8-bit GPU cache's indexer keys: codes [slots, headDim] and a scale per slot. */
function gpuKeyCodes(kv: CudaKvCache, headDim: number): { codes: Uint8Array; scales: Float32Array } {
  const slots = kv.layout.numBlocks * kv.layout.blockSize;
  const codes = new Uint8Array(slots * headDim);
  gpu.device.download(codes, kv.indexKeys(0));
  const scales = new Float32Array(slots);
  gpu.device.download(scales, kv.indexKeyScales(0));
  return { codes, scales };
}

/** What an 8-bit code stands for at scale 1: the e4m3 value or the int8 integer. */
function codeValue(dtype: KvCacheDtype, code: number): number {
  return dtype === 'fp8_e4m3' ? fp8E4m3Values()[code] : (code << 24) >> 24;
}

/** The gap between neighbouring codes' values at scale 1 around magnitude m: int8's 1, e4m3's 2^-9 below 2^-6 and 3 mantissa bits above. */
function codeStep(dtype: KvCacheDtype, m: number): number {
  if (dtype !== 'fp8_e4m3') return 1;
  return m < 2 ** -6 ? 2 ** -9 : 2 ** (Math.floor(Math.log2(m)) - 3);
}

/** Every slot's indexer key as each cache holds it, [slots, headDim] float32: the GPU's bf16 values or codes decoded on the host. */
function cachedKeys(caches: readonly [KvCache, KvCache], headDim: number): [Float32Array, Float32Array] {
  const cpuPool = asCpuKvCache(caches[0]).layerPools(0)[1];
  const kv = caches[1] as CudaKvCache;
  const slots = kv.layout.numBlocks * kv.layout.blockSize;
  const out: [Float32Array, Float32Array] = [new Float32Array(slots * headDim), new Float32Array(slots * headDim)];
  for (let slot = 0; slot < slots; slot++) loadSlot(cpuPool, slot, 1, out[0], slot * headDim);
  if (kv.dtype === 'auto') {
    const bits = new Uint16Array(slots * headDim);
    gpu.device.download(bits, kv.indexKeys(0));
    out[1].set(new Float32Array(Uint32Array.from(bits, (b) => b << 16).buffer));
    return out;
  }
  const { codes, scales } = gpuKeyCodes(kv, headDim);
  codes.forEach((code, i) => (out[1][i] = codeValue(kv.dtype, code) * scales[Math.floor(i / headDim)]));
  return out;
}

/**
 * The step's 8-bit indexer keys code for code: each slot's scales within SCALE_TOLERANCE, and at
 * most one code in CODE_DIFFERENCES (at least one) apart from the CPU's, each by one step.
 */
function assertKeyCodes(label: string, caches: readonly [KvCache, KvCache], slots: Int32Array, headDim: number): void {
  const cpuPool = asCpuKvCache(caches[0]).layerPools(0)[1];
  const kv = caches[1] as CudaKvCache;
  const { codes, scales } = gpuKeyCodes(kv, headDim);
  let differing = 0;
  for (const slot of slots) {
    const want = cpuPool.scales[slot];
    assert.ok(Math.abs(scales[slot] - want) <= SCALE_TOLERANCE * want, `${label}: slot ${slot}'s ${kv.dtype} key scale ${scales[slot]}, the CPU's ${want}`);
    for (let d = 0; d < headDim; d++) {
      const i = slot * headDim + d;
      const got = codeValue(kv.dtype, codes[i]);
      const expected = codeValue(kv.dtype, cpuPool.codes[i] & 0xff);
      if (got === expected) continue;
      differing++;
      const step = codeStep(kv.dtype, Math.max(Math.abs(got), Math.abs(expected)));
      assert.ok(Math.abs(got - expected) <= step, `${label}: slot ${slot} element ${d}: ${kv.dtype} code value ${got}, the CPU's ${expected}: more than one code apart`);
    }
  }
  const allowed = Math.max(1, Math.floor((slots.length * headDim) / CODE_DIFFERENCES));
  assert.ok(differing <= allowed, `${label}: ${differing} of ${slots.length * headDim} ${kv.dtype} key codes differ from the CPU's (at most ${allowed})`);
}

function runScenario(name: string, sh: Shape, blockSize: number, steps: SeqSpec[][], dtype: KvCacheDtype = 'auto'): void {
  const { mla, indexer } = sh;
  const numSeqs = Math.max(...steps.map((step) => step.length));
  const longest = Math.max(...steps.flat().map((q) => q.cached + q.query));
  const numBlocks = numSeqs * (Math.ceil(longest / blockSize) + 1) + 4;
  const layers: KvCacheLayout['layers'] = [{ kind: 'mla', latentDim: mla.latentDim, ropeDim: mla.ropeDim, indexKeys: { keyDim: indexer.headDim } }];
  const layout: KvCacheLayout = { numBlocks, blockSize, layers, dtype };
  const tolerance = dtype === 'auto' ? TOLERANCE : kvCodeTolerance(dtype);
  const caches = [cpu.createKvCache(layout), gpu.createKvCache(layout)] as const;
  const table = ropeTables(longest + 1, mla.ropeDim);
  const rope = { cpu: cpu.uploadRopeTable(table), gpu: gpu.uploadRopeTable(table) };
  const latentNorm = randomPair([mla.latentDim], 0.5);
  const keyNorm = randomPair([indexer.headDim], 0.5);
  const keyBias = randomPair([indexer.headDim], 0.2);
  const blocks = new BlockAssignment(rng, numBlocks, numSeqs);
  steps.forEach((specs, i) => {
    const label = `${name} step ${i} [${specs.map((q) => `${q.cached}+${q.query}`).join(' ')}]`;
    const batch = buildBatch(specs, blocks, blockSize);
    const stepInputs = [cpu.beginStep(batch), gpu.beginStep(batch)] as const;
    const q = randomPair([batch.numTokens, mla.numHeads * (mla.nopeDim + mla.ropeDim)]);
    const kv = randomPair([batch.numTokens, mla.latentDim + mla.ropeDim], 2);
    cpu.mlaRopeAndCacheWrite(q.cpu, kv.cpu, latentNorm.cpu, 1e-6, rope.cpu, caches[0], 0, stepInputs[0], mla);
    gpu.mlaRopeAndCacheWrite(q.gpu, kv.gpu, latentNorm.gpu, 1e-6, rope.gpu, caches[1], 0, stepInputs[1], mla);
    const iq = randomPair([batch.numTokens, indexer.numHeads * indexer.headDim]);
    const ik = randomPair([batch.numTokens, indexer.headDim], 2);
    cpu.indexerRopeAndCacheWrite(iq.cpu, ik.cpu, keyNorm.cpu, keyBias.cpu, 1e-6, rope.cpu, caches[0], 0, stepInputs[0], indexer);
    gpu.indexerRopeAndCacheWrite(iq.gpu, ik.gpu, keyNorm.gpu, keyBias.gpu, 1e-6, rope.gpu, caches[1], 0, stepInputs[1], indexer);
    assertClose(`${label}: rotated indexer queries`, iq.gpu, iq.cpu);
    assertClose(`${label}: normalized and rotated indexer keys`, ik.gpu, ik.cpu);
    // The keys as each cache holds them, compared over the step's slots.
    const kept = cachedKeys(caches, indexer.headDim);
    const stepKeys = kept.map((keys) => {
      const rows = new Float32Array(batch.numTokens * indexer.headDim);
      batch.slotMapping.subarray(0, batch.numTokens).forEach((slot, t) => rows.set(keys.subarray(slot * indexer.headDim, (slot + 1) * indexer.headDim), t * indexer.headDim));
      return rows;
    });
    const keptError = relativeError(stepKeys[1], stepKeys[0]);
    assert.ok(keptError < tolerance, `${label}: ${dtype} indexer keys as cached: relative error ${keptError}`);
    if (dtype !== 'auto') assertKeyCodes(label, caches, batch.slotMapping.subarray(0, batch.numTokens), indexer.headDim);

    const weightValues = Float32Array.from({ length: batch.numTokens * indexer.numHeads }, () => rng() * 2 - 1);
    const weights = float32Tensor(weightValues, [batch.numTokens, indexer.numHeads]);
    const selections = [
      cpu.indexerTopK(iq.cpu, cpu.loadWeight(weights), caches[0], 0, stepInputs[0], indexer),
      gpu.indexerTopK(iq.gpu, gpu.loadWeight(weights, { float32: true }), caches[1], 0, stepInputs[1], indexer),
    ] as const;
    assert.ok(selections[0] instanceof CpuTokenSelection && selections[1] instanceof CudaTokenSelection);
    const want = selections[0].positions;
    const got = new Int32Array(batch.numTokens * indexer.topK);
    gpu.device.download(got, selections[1].ptr);
    const queries = cpu.toHost(iq.cpu);
    for (let t = 0; t < batch.numTokens; t++) {
      const row = Array.from(got.subarray(t * indexer.topK, (t + 1) * indexer.topK));
      const expected = Array.from(want.subarray(t * indexer.topK, (t + 1) * indexer.topK));
      if (row.every((j, k) => j === expected[k])) continue;
      const visible = batch.positions[t] + 1;
      assert.ok(visible > indexer.topK, `${label}: token ${t} sees ${visible} positions, all of which it must keep: ${row}`);
      const chosen = row.filter((j) => j !== -1);
      assert.equal(chosen.length, indexer.topK, `${label}: token ${t} keeps ${chosen.length} positions`);
      assert.ok(chosen.every((j, k) => j >= 0 && j < visible && (k === 0 || j > chosen[k - 1])), `${label}: token ${t}'s positions ${chosen} are not increasing and visible`);
      // Scored over the GPU cache's own keys: an 8-bit key one code from the CPU's is the write's error, checked above.
      const scores = scoresOver(kept[1], blockSize, queries, weightValues, batch, t, indexer);
      const kth = [...scores].sort((a, b) => b - a)[indexer.topK - 1];
      for (const j of chosen) assert.ok(scores[j] >= kth - SCORE_TOLERANCE * (1 + Math.abs(kth)), `${label}: token ${t} keeps position ${j}, scoring ${scores[j]} below the k-th best ${kth}`);
    }

    // The CPU's choice, on the device too: both attend to the same rows.
    const shared = gpu.device.alloc(want.byteLength);
    try {
      gpu.device.uploadSync(shared, want);
      const qLatent = randomPair([batch.numTokens, mla.numHeads * mla.latentDim], 0.5);
      const out = [
        cpu.mlaAttention(qLatent.cpu, q.cpu, caches[0], 0, stepInputs[0], mla, selections[0]),
        gpu.mlaAttention(qLatent.gpu, q.gpu, caches[1], 0, stepInputs[1], mla, new CudaTokenSelection(batch.numTokens, indexer.topK, shared)),
      ];
      const err = relativeError(gpu.toHost(out[1]), cpu.toHost(out[0]));
      assert.ok(err < tolerance, `${label}: ${dtype} sparse attention: relative error ${err}`);
    } finally {
      gpu.device.free(shared);
    }
  });
}

function pickBlockSize(): number {
  return [4, 16, 64][randInt(rng, 0, 2)];
}

function chunks(numSeqs: number, maxQuery: number): SeqSpec[] {
  return Array.from({ length: numSeqs }, () => ({ cached: 0, query: randInt(rng, 1, maxQuery) }));
}

function next(prev: SeqSpec[], maxQuery: number): SeqSpec[] {
  return prev.map((q) => ({ cached: q.cached + q.query, query: rng() < 0.5 ? 1 : randInt(rng, 2, maxQuery) }));
}

const SHAPES: [string, Shape][] = [
  ['the fixture (4 MLA heads of latent 32 + rope 8; 16 indexer heads of 16, top 8)', shape(4, 32, 8, 16, 16, 8)],
  ['DeepSeek-V3.2 (128 heads of latent 512 + rope 64; 64 indexer heads of 128), top 64', shape(128, 512, 64, 64, 128, 64)],
  ['16 heads of latent 256 + rope 32; 8 indexer heads of 64, top 100', shape(16, 256, 32, 8, 64, 100)],
];

for (const dtype of ['auto', 'fp8_e4m3', 'int8'] as const) {
  for (const [name, sh] of SHAPES) {
    test(`${dtype} cache: indexer write, top-k and sparse MLA agree with the CPU: prefill chunks, then decodes and chunks mixed: ${name}`, () => {
      for (let trial = 0; trial < 2; trial++) {
        const first = chunks(randInt(rng, 1, 3), 150);
        // An 8-bit cache on CUDA takes block sizes that are multiples of 4.
        runScenario(`${name} trial ${trial}`, sh, pickBlockSize(), [first, next(first, 60), next(next(first, 60), 1)], dtype);
      }
    });
  }

  test(`${dtype} cache: a long decode selects from thousands of positions (the radix select's passes over many equal high bits)`, () => {
    // The fixture's small heads: the CPU twins' cost grows with positions × head widths, and at
    // V3.2's widths (16 MLA heads of 512, 64 indexer heads of 128) this prefill took minutes per dtype.
    const sh = shape(4, 32, 8, 16, 16, 2048);
    const specs = [{ cached: 0, query: 3000 }, { cached: 0, query: 40 }];
    runScenario('long decode', sh, 16, [specs, specs.map((q) => ({ cached: q.query, query: 1 }))], dtype);
  });
}

for (const dtype of ['auto', 'fp8_e4m3', 'int8'] as const) {
  test(`${dtype} cache: indexer keys (8-bit: codes and scales) move with their blocks: copy-on-write, a swap out and in, and slot by slot`, () => {
    const { indexer } = SHAPES[1][1];
    const blockSize = 16;
    const layout: KvCacheLayout = { numBlocks: 8, blockSize, layers: [{ kind: 'mla', latentDim: 512, ropeDim: 64, indexKeys: { keyDim: indexer.headDim } }], dtype };
    const slots = (blocks: Int32Array) => Int32Array.from({ length: blocks.length * blockSize }, (_, i) => blocks[Math.floor(i / blockSize)] * blockSize + (i % blockSize));
    const swap = (cache: KvCache, src: Int32Array, dst: Int32Array) => {
      const space = gpu.createSwapSpace({ ...layout, numBlocks: src.length });
      const host = Int32Array.from(src, (_, i) => i);
      gpu.swapOut(cache, space, src, host);
      gpu.swapIn(cache, space, host, dst);
      gpu.awaitSwapIns();
    };
    const movers: [string, (cache: KvCache, src: Int32Array, dst: Int32Array) => void][] = [
      ['copyBlocks', (cache, src, dst) => gpu.copyBlocks(cache, src, dst)],
      ['swap', swap],
      ['copySlots', (cache, src, dst) => gpu.copySlots(cache, slots(src), slots(dst))],
    ];
    for (const [name, move] of movers) {
      const caches = [cpu.createKvCache(layout), gpu.createKvCache(layout)] as const;
      const batch = describeBatch([{ tokens: new Array<number>(2 * blockSize).fill(0), startPos: 0, blockTables: [[5, 1]] }], blockSize);
      const table = ropeTables(2 * blockSize, indexer.ropeDim);
      const step = gpu.beginStep(batch);
      const iq = randomPair([batch.numTokens, indexer.numHeads * indexer.headDim]);
      const ik = randomPair([batch.numTokens, indexer.headDim], 2);
      gpu.indexerRopeAndCacheWrite(iq.gpu, ik.gpu, randomPair([indexer.headDim], 0.5).gpu, randomPair([indexer.headDim], 0.2).gpu, 1e-6, gpu.uploadRopeTable(table), caches[1], 0, step, indexer);
      move(caches[1], Int32Array.of(5, 1), Int32Array.of(2, 7));
      const keys = cachedKeys(caches, indexer.headDim)[1];
      const block = (b: number) => keys.subarray(b * blockSize * indexer.headDim, (b + 1) * blockSize * indexer.headDim);
      assert.ok(block(5).some((v) => v !== 0), `${dtype} ${name}: keys were written`);
      assert.deepEqual(block(2), block(5), `${dtype} ${name}: block 5's keys as cached, in block 2`);
      assert.deepEqual(block(7), block(1), `${dtype} ${name}: block 1's keys as cached, in block 7`);
    }
  });
}
