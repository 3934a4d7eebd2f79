import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import type { IndexerParams, KvCache, MlaParams, Tensor } from '../../../src/backend/backend.ts';
import { CpuBackend, CpuTokenSelection } from '../../../src/backend/cpu/cpu-backend.ts';
import { asCpuKvCache } from '../../../src/backend/cpu/cpu-tensor.ts';
import { CudaBackend, CudaTokenSelection } from '../../../src/backend/cuda/cuda-backend.ts';
import { BlockAssignment, bf16Tensor, buildBatch, randomBf16Values, ropeTables, seededRng, type SeqSpec } from '../../../src/bench/synthetic-batch.ts';
import type { BatchDescription } from '../../../src/step/batch.ts';
import type { KvCacheLayout } from '../../../src/step/kv-cache-layout.ts';
import { float32Tensor } from '../../../src/tensor/host-ops.ts';
import { randInt, relativeError, testSeed } from '../../helpers/gpu-test-support.ts';

// DeepSeek-V3.2's sparse attention on the GPU against the CPU twins: the indexer's key write
// (lightning-indexer.cu indexer_key_write_kernel), its top-k (indexer_topk_kernel: scores, radix
// select, ordered compaction) and MLA over each token's selected rows (sparse-mla.cu), over
// prefill chunks then decodes and chunks mixed in one step. bf16 scores may order two positions
// whose float64 scores are nearly equal the other way: a GPU choice is accepted when it keeps the
// right number of visible positions, in order, each scoring on the CPU within SCORE_TOLERANCE of
// the CPU's k-th best. Sparse MLA is compared over one selection, the CPU's, given to both.

const rng = seededRng(testSeed('cuda lightning indexer'));
const gpu = new CudaBackend({ poisonStepTensors: true });
const cpu = new CpuBackend();
after(() => gpu.dispose());

const TOLERANCE = 1e-2;
const SCORE_TOLERANCE = 3e-2;

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

/** CPU index scores of token t over its visible positions, from the CPU cache's keys (float64). */
function cpuScores(cache: KvCache, q: Float32Array, weights: Float32Array, batch: BatchDescription, t: number, indexer: IndexerParams): number[] {
  const keys = asCpuKvCache(cache).layerPools(0)[1].codes as Float32Array;
  const { numHeads, headDim } = indexer;
  let s = 0;
  while (batch.queryStartLoc[s + 1] <= t) s++;
  const blockSize = cache.layout.blockSize;
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

function runScenario(name: string, sh: Shape, blockSize: number, steps: SeqSpec[][]): void {
  const { mla, indexer } = sh;
  const numSeqs = Math.max(...steps.map((step) => step.length));
  const longest = Math.max(...steps.flat().map((q) => q.cached + q.query));
  const numBlocks = numSeqs * (Math.ceil(longest / blockSize) + 1) + 4;
  const layout: KvCacheLayout = { numBlocks, blockSize, layers: [{ kind: 'mla', latentDim: mla.latentDim, ropeDim: mla.ropeDim, indexKeys: { keyDim: indexer.headDim } }] };
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
      const scores = cpuScores(caches[0], queries, weightValues, batch, t, indexer);
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
      assertClose(`${label}: sparse attention`, out[1], out[0]);
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

for (const [name, sh] of SHAPES) {
  test(`indexer write, top-k and sparse MLA agree with the CPU: prefill chunks, then decodes and chunks mixed: ${name}`, () => {
    for (let trial = 0; trial < 2; trial++) {
      const first = chunks(randInt(rng, 1, 3), 150);
      runScenario(`${name} trial ${trial}`, sh, pickBlockSize(), [first, next(first, 60), next(next(first, 60), 1)]);
    }
  });
}

test('a long decode selects from thousands of positions (the radix select\'s passes over many equal high bits)', () => {
  const sh = shape(16, 512, 64, 64, 128, 2048);
  const specs = [{ cached: 0, query: 3000 }, { cached: 0, query: 40 }];
  runScenario('long decode', sh, 16, [specs, specs.map((q) => ({ cached: q.query, query: 1 }))]);
});
