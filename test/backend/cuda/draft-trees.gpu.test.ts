import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import type { AttentionParams, Backend, DraftTreeNodes, DraftTrees } from '../../../src/backend/backend.ts';
import { CpuBackend } from '../../../src/backend/cpu/cpu-backend.ts';
import { draftTreeSlots, expandDraftTrees } from '../../../src/backend/cpu/ops/draft-trees.ts';
import { CudaBackend } from '../../../src/backend/cuda/cuda-backend.ts';
import { bf16Tensor, randomBf16Values, seededRng } from '../../../src/bench/synthetic-batch.ts';
import { buildRopeTable } from '../../../src/layers/rotary.ts';
import { scoreDraw } from '../../../src/sampling/draw.ts';
import { describeBatch, type SequenceChunk } from '../../../src/step/batch.ts';
import { attentionLayout, plainAttention } from '../../helpers/kv-layout.ts';
import { randInt, testSeed } from '../../helpers/gpu-test-support.ts';

// The ops that grow EAGLE-2 trees on the device (draft-trees.cu) against their CPU twins: each
// depth's ranking on the GPU equals the CPU's on the same sampling pass's candidates (logits of a
// few values, so that path log-probabilities tie), the trees' tokens are where the next pass
// embeds them, and the tree mask and feature slots picked from the parents on the device equal
// those the host builds from the parents it reads.

const rng = seededRng(testSeed('cuda draft trees'));
const gpu = new CudaBackend({ poisonStepTensors: true });
const cpu = new CpuBackend();
after(() => gpu.dispose());

const VOCAB = 48;
const MAP = Int32Array.from({ length: VOCAB }, (_, i) => 500 + 3 * i);

/** Grows `sizes.length` trees `width` wide on the GPU, checking every depth against the CPU twin on the pass's own candidates. */
function growTrees(width: number, sizes: number[], map: Int32Array | null): { trees: DraftTrees; expected: DraftTreeNodes; size: number } {
  const size = Math.max(...sizes);
  const trees = gpu.beginDraftTrees(sizes.length, size);
  const n = sizes.length * size;
  const expected: DraftTreeNodes = { tokens: new Int32Array(n).fill(-1), parents: new Int32Array(n).fill(-1), logprobs: new Float32Array(n) };
  const counts = sizes.map(() => 0);
  const frontiers = sizes.map(() => 0);
  for (let growing = sizes.map((_, t) => t); growing.length > 0; growing = growing.filter((t) => counts[t] < sizes[t])) {
    const rows = new Int32Array(sizes.length);
    let numRows = 0;
    for (const t of growing) {
      rows[t] = numRows;
      numRows += Math.max(1, frontiers[t]);
    }
    // Few distinct logits: equal log-probabilities within a row and equal path sums across rows.
    const logits = Float32Array.from({ length: numRows * VOCAB }, () => randInt(rng, 0, 3) / 2);
    const sampled = gpu.sampleRows(gpu.loadWeight(bf16Tensor([numRows, VOCAB], logits)), Array.from({ length: numRows }, (_, row) => scoreDraw(row, 0, width)));
    const keeps = Int32Array.from(sizes, (s, t) => (growing.includes(t) ? Math.min(width, s - counts[t]) : 0));
    const depth = { counts: Int32Array.from(counts), frontiers: Int32Array.from(frontiers), keeps, rows };
    gpu.expandDraftTrees(trees, depth, map);
    expandDraftTrees(expected, size, depth, sampled.read(), map);
    for (const t of growing) {
      counts[t] += keeps[t];
      frontiers[t] = keeps[t];
    }
  }
  return { trees, expected, size };
}

function assertTreesEqual(got: DraftTreeNodes, expected: DraftTreeNodes, sizes: number[], size: number, what: string): void {
  sizes.forEach((s, t) => {
    const nodes = (a: DraftTreeNodes) => ({ tokens: [...a.tokens.subarray(t * size, t * size + s)], parents: [...a.parents.subarray(t * size, t * size + s)], logprobs: [...a.logprobs.subarray(t * size, t * size + s)] });
    assert.deepEqual(nodes(got), nodes(expected), `${what}: tree ${t}`);
  });
}

test('expandDraftTrees ranks each depth exactly as the CPU twin does on the same candidates, with and without an id map', () => {
  for (const [width, map] of [[2, null], [3, MAP], [4, null], [8, MAP]] as const) {
    // Trees of at least `width` nodes: the first depth keeps `width` of the root's candidates, whose
    // log-probabilities take at most 4 values (the logits'), so at width 8 some tie (pigeonhole).
    const sizes = Array.from({ length: randInt(rng, 1, 5) }, () => randInt(rng, width, 4 * width));
    const { trees, expected, size } = growTrees(width, sizes, map);
    const got = trees.read();
    assertTreesEqual(got, expected, sizes, size, `width ${width}`);
    const ties = sizes.some((s, t) => new Set(expected.logprobs.subarray(t * size, t * size + s)).size < s);
    assert.ok(ties || width < 8, `width ${width}: some path log-probabilities tie`);
    // The latest pass's ids are now the trees' tokens: a step reading them embeds each node's.
    const table = bf16Tensor([1000, 8], randomBf16Values(rng, 8000));
    const chunks = sizes.map((s, t): SequenceChunk => ({ tokens: new Array<number>(s).fill(0), startPos: 0, blockTables: [[t]], tokenSources: Array.from({ length: s }, (_, i) => t * size + i) }));
    const step = gpu.beginStep(describeBatch(chunks, 4 * width));
    const embedded = gpu.toHost(gpu.embedding(gpu.loadWeight(table), step, 1, 0));
    const tokens = sizes.flatMap((s, t) => [...expected.tokens.subarray(t * size, t * size + s)]);
    const rows = cpu.toHost(cpu.embedding(cpu.loadWeight(table), cpu.beginStep(describeBatch([{ tokens, startPos: 0, blockTables: [[0]] }], tokens.length)), 1, 0));
    assert.deepEqual([...embedded], [...rows], `width ${width}: the embedding read the nodes' tokens`);
    gpu.beginDraftTrees(1, 1);
    assert.throws(() => trees.read(), /draft trees used after a later beginDraftTrees reused their buffer/);
  }
});

test('writeDraftTreeMask and readDraftTreeCacheRows pick each node\'s ancestors and feature slot from the parents on the device', () => {
  const width = 3;
  const sizes = [9, 5, 12];
  const { trees, expected, size } = growTrees(width, sizes, null);
  const parentsOf = (t: number, n: number) => [...expected.parents.subarray(t * size, t * size + n)];
  const headDim = 64;
  const attn: AttentionParams = plainAttention({ numHeads: 2, numKvHeads: 1, headDim, scale: headDim ** -0.5, slidingWindow: null });
  const blockSize = 8;
  const contexts = sizes.map(() => randInt(rng, 2, 40));
  const tables = contexts.map((c, t) => Array.from({ length: Math.ceil((c + sizes[t] + 2) / blockSize) }, (_, i) => t * 16 + i));
  const layout = { ...attentionLayout({ numLayers: 1, numBlocks: 48, blockSize, numKvHeads: 1, headDim }), layers: [{ kind: 'attention', numKvHeads: 1, headDim, slidingWindow: null }, { kind: 'rows', width: 16 }] } as const;
  const cache = gpu.createKvCache(layout);
  gpu.writeCacheRows(cache, 1, gpu.loadWeight(bf16Tensor([48 * blockSize, 16], randomBf16Values(rng, 48 * blockSize * 16))), Int32Array.from({ length: 48 * blockSize }, (_, i) => i));
  const longest = Math.max(...contexts.map((c, t) => c + sizes[t] + 2));
  const rope = gpu.uploadRopeTable(buildRopeTable({ rotaryDim: headDim, theta: 10000, scaling: { type: 'default' }, maxPositionEmbeddings: longest }, longest));
  const width3 = (attn.numHeads + 2) * headDim;
  const slot = (t: number, index: number) => tables[t][Math.floor(index / blockSize)] * blockSize + (index % blockSize);
  // Each tree's pass as the head proposer lays it out: its root's predecessor at the context's end, then its nodes placed by depth.
  const pass = (real: boolean) =>
    sizes.map((n, t): SequenceChunk => {
      const depthParents = Array.from({ length: n }, (_, i) => (i < width ? -1 : Math.floor(i / width) * width - width));
      return { tokens: new Array<number>(n + 1).fill(0), startPos: contexts[t], blockTables: [tables[t]], treeParents: [-1, ...(real ? parentsOf(t, n) : depthParents).map((p) => p + 1)] };
    });
  const chunkTrees = Int32Array.from(sizes, (_, t) => t);
  const attend = (b: Backend, chunks: SequenceChunk[], rewrite: boolean): Float32Array => {
    const step = b.beginStep(describeBatch(chunks, blockSize));
    // A fresh copy each time: the rotation rewrites q in place.
    const qkv = b.loadWeight(bf16Tensor([step.batch.numTokens, width3], values));
    if (rewrite) b.writeDraftTreeMask(trees, step, chunkTrees);
    b.ropeAndCacheWrite(qkv, rope, cache, 0, step, attn);
    return b.toHost(b.attention(qkv, cache, 0, step, attn));
  };
  // The placeholders share the real parents' depths, so the same positions and K/V: only the mask differs.
  const real = describeBatch(pass(true), blockSize);
  assert.deepEqual([...describeBatch(pass(false), blockSize).positions], [...real.positions], 'placeholders keep each node\'s depth');
  const values = randomBf16Values(rng, real.numTokens * width3, 2);
  const masked = attend(gpu, pass(true), false);
  assert.notDeepEqual([...attend(gpu, pass(false), false)], [...masked], 'the placeholders\' own mask attends elsewhere');
  assert.deepEqual([...attend(gpu, pass(false), true)], [...masked], 'attention under the device-written mask');
  const slots = Int32Array.from(sizes.flatMap((n, t) => Array.from({ length: n + 2 }, (_, i) => slot(t, contexts[t] + i))));
  const step = gpu.beginStep(describeBatch(pass(false), blockSize));
  const picked = gpu.toHost(gpu.readDraftTreeCacheRows(cache, 1, trees, step, chunkTrees, slots));
  const hostSlots = draftTreeSlots(real, expected.parents, size, chunkTrees, slots);
  assert.deepEqual([...picked], [...gpu.toHost(gpu.readCacheRows(cache, 1, hostSlots))], 'feature rows at the slots the host picks');
});
