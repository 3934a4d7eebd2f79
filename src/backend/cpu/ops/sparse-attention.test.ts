import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CpuBackend } from '../cpu-backend.ts';
import { CpuKvCache, CpuTensor } from '../cpu-tensor.ts';
import { loadSlot } from './kv-codes.ts';
import type { AttentionParams } from '../../backend.ts';
import { describeBatch, type SequenceChunk } from '../../../step/batch.ts';
import type { KvCacheDtype, SparseAttention } from '../../../step/kv-cache-layout.ts';
import { TestRandom, testSeed } from '../../../../test/helpers/cpu-random.ts';
import { plainRopeTable } from '../../../../test/helpers/cpu-random-llama.ts';

const seed = testSeed('sparse-attention');
const random = new TestRandom(seed);

interface Case {
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  blockSize: number;
  dtype: KvCacheDtype;
  sparse: SparseAttention;
}

const CASES: Case[] = [
  { numHeads: 4, numKvHeads: 2, headDim: 16, blockSize: 4, dtype: 'auto', sparse: { tokenBudget: 24, sinkTokens: 4, windowTokens: 8 } },
  { numHeads: 6, numKvHeads: 2, headDim: 8, blockSize: 8, dtype: 'int8', sparse: { tokenBudget: 40, sinkTokens: 1, windowTokens: 9 } },
  { numHeads: 2, numKvHeads: 2, headDim: 8, blockSize: 4, dtype: 'fp8_e4m3', sparse: { tokenBudget: 12, sinkTokens: 0, windowTokens: 4 } },
  { numHeads: 8, numKvHeads: 1, headDim: 16, blockSize: 3, dtype: 'auto', sparse: { tokenBudget: 9, sinkTokens: 2, windowTokens: 2 } },
  { numHeads: 4, numKvHeads: 2, headDim: 16, blockSize: 4, dtype: 'int4', sparse: { tokenBudget: 20, sinkTokens: 2, windowTokens: 6 } },
];

/** Keys and values of position j of a sequence as the cache holds them (dequantized), per kv head. */
function cachedRow(cache: CpuKvCache, pool: 0 | 1, slot: number): Float32Array {
  const p = cache.pools[0][pool];
  const out = new Float32Array(p.heads * p.width);
  loadSlot(p, slot, 1, out, 0);
  return out;
}

/** The summaries of a block straight from the definition: per kv head and channel, the min and max over its tokens' cached keys. */
function referenceSummary(cache: CpuKvCache, c: Case, table: number[], block: number, seqLen: number): { min: number[]; max: number[] }[] {
  return Array.from({ length: c.numKvHeads }, (_, h) => {
    const min = Array(c.headDim).fill(Infinity);
    const max = Array(c.headDim).fill(-Infinity);
    for (let j = block * c.blockSize; j < Math.min(seqLen, (block + 1) * c.blockSize); j++) {
      const key = cachedRow(cache, 0, table[block] * c.blockSize + (j % c.blockSize));
      for (let d = 0; d < c.headDim; d++) {
        min[d] = Math.min(min[d], key[h * c.headDim + d]);
        max[d] = Math.max(max[d], key[h * c.headDim + d]);
      }
    }
    return { min, max };
  });
}

/**
 * Quest's selection from its definition: per kv head, every block outside the sinks and the window
 * ranked by its bound (higher first, the earlier block on a tie); the sinks, the window and the
 * best of the rest up to the budget are kept. Returns the kept positions per kv head.
 */
function referencePositions(cache: CpuKvCache, c: Case, table: number[], seqLen: number, query: Float32Array): number[][] {
  const numBlocks = Math.ceil(seqLen / c.blockSize);
  const budget = Math.floor(c.sparse.tokenBudget / c.blockSize);
  const sinks = Math.ceil(c.sparse.sinkTokens / c.blockSize);
  const window = Math.ceil(c.sparse.windowTokens / c.blockSize);
  const group = c.numHeads / c.numKvHeads;
  return Array.from({ length: c.numKvHeads }, (_, h) => {
    let kept = Array.from({ length: numBlocks }, (_, b) => b);
    if (numBlocks > budget) {
      const score = (b: number) => {
        const { min, max } = referenceSummary(cache, c, table, b, seqLen)[h];
        let s = 0;
        for (let g = 0; g < group; g++) for (let d = 0; d < c.headDim; d++) {
          const q = query[(h * group + g) * c.headDim + d];
          s += Math.max(q * min[d], q * max[d]);
        }
        return s;
      };
      const candidates = kept.filter((b) => b >= sinks && b < numBlocks - window);
      const scores = new Map(candidates.map((b) => [b, score(b)]));
      const rank = (b: number) => candidates.filter((o) => scores.get(o)! > scores.get(b)! || (scores.get(o) === scores.get(b) && o < b)).length;
      kept = kept.filter((b) => b < sinks || b >= numBlocks - window || rank(b) < budget - sinks - window);
    }
    return kept.flatMap((b) => Array.from({ length: c.blockSize }, (_, i) => b * c.blockSize + i)).filter((j) => j < seqLen);
  });
}

/** Attention of each query head over its kv head's kept positions, in float64. */
function referenceAttention(cache: CpuKvCache, c: Case, table: number[], positions: number[][], query: Float32Array): number[] {
  const out: number[] = [];
  const group = c.numHeads / c.numKvHeads;
  for (let head = 0; head < c.numHeads; head++) {
    const h = Math.floor(head / group);
    const slots = positions[h].map((j) => table[Math.floor(j / c.blockSize)] * c.blockSize + (j % c.blockSize));
    const scores = slots.map((slot) => {
      const key = cachedRow(cache, 0, slot);
      let s = 0;
      for (let d = 0; d < c.headDim; d++) s += query[head * c.headDim + d] * key[h * c.headDim + d];
      return s * c.headDim ** -0.5;
    });
    const max = Math.max(...scores);
    const exps = scores.map((s) => Math.exp(s - max));
    const sum = exps.reduce((a, b) => a + b, 0);
    for (let d = 0; d < c.headDim; d++) out.push(slots.reduce((acc, slot, i) => acc + (exps[i] / sum) * cachedRow(cache, 1, slot)[h * c.headDim + d], 0));
  }
  return out;
}

function params(c: Case, sparse: SparseAttention | null): AttentionParams {
  return { numHeads: c.numHeads, numKvHeads: c.numKvHeads, headDim: c.headDim, scale: c.headDim ** -0.5, slidingWindow: null, softcap: null, sinks: null, streaming: null, sparse };
}

for (const c of CASES) {
  test(`sparse attention (${c.numHeads}/${c.numKvHeads} heads of ${c.headDim}, blocks of ${c.blockSize}, ${c.dtype} cache, budget ${c.sparse.tokenBudget}): summaries, selection and output follow Quest's definition (seed ${seed})`, () => {
    const backend = new CpuBackend();
    const numBlocks = 48;
    const cache = backend.createKvCache({ numBlocks, blockSize: c.blockSize, dtype: c.dtype, layers: [{ kind: 'attention', numKvHeads: c.numKvHeads, headDim: c.headDim, slidingWindow: null, keySummaries: true }] }) as CpuKvCache;
    const rope = backend.uploadRopeTable(plainRopeTable(c.headDim, 10000, 256));
    const rowWidth = (c.numHeads + 2 * c.numKvHeads) * c.headDim;
    // Two sequences on shuffled blocks: one prefills in chunks, then both decode side by side.
    const ids = Array.from({ length: numBlocks }, (_, i) => i).sort(() => random.uniform(-1, 1));
    const tables = [ids.slice(0, 24), ids.slice(24, 48)];
    const lengths = [0, 0];
    const run = (chunks: { seq: number; tokens: number }[]) => {
      const seqChunks: SequenceChunk[] = chunks.map(({ seq, tokens }) => ({ tokens: Array(tokens).fill(1), startPos: lengths[seq], blockTables: [tables[seq]] }));
      const batch = describeBatch(seqChunks, c.blockSize);
      const step = backend.beginStep(batch);
      const qkv = new CpuTensor([batch.numTokens, rowWidth], random.floats(batch.numTokens * rowWidth, 2));
      backend.ropeAndCacheWrite(qkv, rope, cache, 0, step, params(c, c.sparse));
      chunks.forEach(({ seq, tokens }) => (lengths[seq] += tokens));
      const sparseOut = (backend.attention(qkv, cache, 0, step, params(c, c.sparse)) as CpuTensor).data;
      const denseOut = (backend.attention(qkv, cache, 0, step, params(c, null)) as CpuTensor).data;
      chunks.forEach(({ seq, tokens }, s) => {
        const table = tables[seq];
        const summaries = cache.pools[0][2].codes as Float32Array;
        for (let b = 0; b < Math.ceil(lengths[seq] / c.blockSize); b++) {
          referenceSummary(cache, c, table, b, lengths[seq]).forEach(({ min, max }, h) => {
            const at = (table[b] * c.numKvHeads + h) * 2 * c.headDim;
            assert.deepEqual(Array.from(summaries.subarray(at, at + c.headDim)), min.map(Math.fround), `seq ${seq} block ${b} head ${h} minima`);
            assert.deepEqual(Array.from(summaries.subarray(at + c.headDim, at + 2 * c.headDim)), max.map(Math.fround), `seq ${seq} block ${b} head ${h} maxima`);
          });
        }
        const first = batch.queryStartLoc[s];
        const outWidth = c.numHeads * c.headDim;
        if (tokens > 1) {
          // Prefill chunks stay dense.
          assert.deepEqual(sparseOut.subarray(first * outWidth, (first + tokens) * outWidth), denseOut.subarray(first * outWidth, (first + tokens) * outWidth));
          return;
        }
        const query = qkv.data.subarray(first * rowWidth, first * rowWidth + outWidth);
        const expected = referenceAttention(cache, c, table, referencePositions(cache, c, table, lengths[seq], query), query);
        const got = sparseOut.subarray(first * outWidth, (first + 1) * outWidth);
        expected.forEach((e, i) => assert.ok(Math.abs(got[i] - e) <= 1e-5 * (1 + Math.abs(e)), `seq ${seq} at length ${lengths[seq]}: output ${i} is ${got[i]}, the definition gives ${e}`));
        if (lengths[seq] <= Math.floor(c.sparse.tokenBudget / c.blockSize) * c.blockSize) {
          assert.deepEqual(got, denseOut.subarray(first * outWidth, (first + 1) * outWidth), `seq ${seq} at length ${lengths[seq]}: within the budget, sparse equals dense exactly`);
        }
      });
    };
    run([{ seq: 0, tokens: 7 }]);
    run([{ seq: 0, tokens: 9 }, { seq: 1, tokens: 5 }]);
    for (let i = 0; i < 30; i++) run([{ seq: 0, tokens: 1 }, { seq: 1, tokens: i === 3 ? 23 : 1 }]);
  });
}

test('a budget covering the whole sequence attends exactly as dense attention does', () => {
  const c = CASES[0];
  const backend = new CpuBackend();
  const cache = backend.createKvCache({ numBlocks: 16, blockSize: c.blockSize, layers: [{ kind: 'attention', numKvHeads: c.numKvHeads, headDim: c.headDim, slidingWindow: null, keySummaries: true }] });
  const rope = backend.uploadRopeTable(plainRopeTable(c.headDim, 10000, 64));
  const rowWidth = (c.numHeads + 2 * c.numKvHeads) * c.headDim;
  const sparse = { tokenBudget: 64, sinkTokens: 4, windowTokens: 4 };
  const table = Array.from({ length: 16 }, (_, i) => 15 - i);
  for (let length = 0; length < 60; length += length === 0 ? 20 : 1) {
    const tokens = length === 0 ? 20 : 1;
    const step = backend.beginStep(describeBatch([{ tokens: Array(tokens).fill(1), startPos: length, blockTables: [table] }], c.blockSize));
    const qkv = new CpuTensor([tokens, rowWidth], random.floats(tokens * rowWidth));
    backend.ropeAndCacheWrite(qkv, rope, cache, 0, step, params(c, sparse));
    const got = (backend.attention(qkv, cache, 0, step, params(c, sparse)) as CpuTensor).data;
    assert.deepEqual(got, (backend.attention(qkv, cache, 0, step, params(c, null)) as CpuTensor).data);
  }
});

for (const dtype of ['auto', 'int8', 'fp8_e4m3', 'int4'] as const) {
  test(`copySlots (a tree's accepted path moved into place) recomputes the summaries of the destination blocks from their keys (${dtype} cache, seed ${seed})`, () => {
    const c: Case = { numHeads: 4, numKvHeads: 2, headDim: 8, blockSize: 4, dtype, sparse: { tokenBudget: 16, sinkTokens: 4, windowTokens: 8 } };
    const backend = new CpuBackend();
    const cache = backend.createKvCache({ numBlocks: 8, blockSize: c.blockSize, dtype, layers: [{ kind: 'attention', numKvHeads: c.numKvHeads, headDim: c.headDim, slidingWindow: null, keySummaries: true }] }) as CpuKvCache;
    const rope = backend.uploadRopeTable(plainRopeTable(c.headDim, 10000, 64));
    const rowWidth = (c.numHeads + 2 * c.numKvHeads) * c.headDim;
    const table = [5, 2, 7, 0];
    // A tree of 8 tokens from position 5: root, then drafts at cache indices 6 .. 12.
    const step = backend.beginStep(describeBatch([{ tokens: Array(13).fill(1), startPos: 0, blockTables: [table] }], c.blockSize));
    backend.ropeAndCacheWrite(new CpuTensor([13, rowWidth], random.floats(13 * rowWidth, 2)), rope, cache, 0, step, params(c, c.sparse));
    // The accepted path: the drafts at cache indices 8, 10 and 12 belong at 6, 7 and 8 (crossing into block 2).
    const slot = (index: number) => table[Math.floor(index / c.blockSize)] * c.blockSize + (index % c.blockSize);
    backend.copySlots(cache, Int32Array.from([8, 10, 12], slot), Int32Array.from([6, 7, 8], slot));
    const summaries = cache.pools[0][2].codes as Float32Array;
    for (const [block, length] of [[1, 8], [2, 9]]) {
      referenceSummary(cache, c, table, block, length).forEach(({ min, max }, h) => {
        const at = (table[block] * c.numKvHeads + h) * 2 * c.headDim;
        assert.deepEqual(Array.from(summaries.subarray(at, at + 2 * c.headDim)), [...min, ...max].map(Math.fround), `block ${block} head ${h}`);
      });
    }
  });
}

/**
 * Runs `chunks` of one sequence on a fresh sparse cache, one step each, over the same prompt; each
 * chunk is its qkv rows (pre-rotary) and how it runs. Returns every step's attention output.
 */
function runSteps(c: Case, prompt: Float32Array, chunks: { rows: Float32Array; startPos: number; parents?: number[]; verification?: boolean }[]): Float32Array[] {
  const backend = new CpuBackend();
  const cache = backend.createKvCache({ numBlocks: 32, blockSize: c.blockSize, layers: [{ kind: 'attention', numKvHeads: c.numKvHeads, headDim: c.headDim, slidingWindow: null, keySummaries: true }] });
  const rope = backend.uploadRopeTable(plainRopeTable(c.headDim, 10000, 256));
  const rowWidth = (c.numHeads + 2 * c.numKvHeads) * c.headDim;
  const table = Array.from({ length: 32 }, (_, i) => (i * 7) % 32);
  const run = (rows: Float32Array, startPos: number, parents?: number[], verification?: boolean) => {
    const tokens = rows.length / rowWidth;
    const step = backend.beginStep(describeBatch([{ tokens: Array(tokens).fill(1), startPos, blockTables: [table], treeParents: parents, verification }], c.blockSize));
    const qkv = new CpuTensor([tokens, rowWidth], rows.slice());
    backend.ropeAndCacheWrite(qkv, rope, cache, 0, step, params(c, c.sparse));
    return (backend.attention(qkv, cache, 0, step, params(c, c.sparse)) as CpuTensor).data;
  };
  run(prompt, 0);
  return chunks.map((chunk) => run(chunk.rows, chunk.startPos, chunk.parents, chunk.verification));
}

test(`each token of a verification chain or tree attends exactly as the decode of its path at its position would (seed ${seed})`, () => {
  const c: Case = { numHeads: 6, numKvHeads: 2, headDim: 8, blockSize: 4, dtype: 'auto', sparse: { tokenBudget: 24, sinkTokens: 4, windowTokens: 8 } };
  const rowWidth = (c.numHeads + 2 * c.numKvHeads) * c.headDim;
  const outWidth = c.numHeads * c.headDim;
  for (const promptLength of [58, 61, 63]) {
    const prompt = random.floats(promptLength * rowWidth, 2);
    const drafts = random.floats(7 * rowWidth, 2);
    const row = (i: number) => drafts.subarray(i * rowWidth, (i + 1) * rowWidth);
    // A chain of 7 (crossing a block boundary) in one step, against 7 decodes.
    const [chain] = runSteps(c, prompt, [{ rows: drafts, startPos: promptLength, verification: true }]);
    const decodes = runSteps(c, prompt, Array.from({ length: 7 }, (_, i) => ({ rows: row(i), startPos: promptLength + i })));
    decodes.forEach((out, i) => assert.deepEqual(chain.subarray(i * outWidth, (i + 1) * outWidth), out, `prompt ${promptLength}: chain token ${i}`));
    // A tree (root, two children, their children, one great-grandchild), against the decodes of each token's path.
    const parents = [-1, 0, 0, 1, 2, 2, 3];
    const [tree] = runSteps(c, prompt, [{ rows: drafts, startPos: promptLength, parents, verification: true }]);
    parents.forEach((_, i) => {
      const path: number[] = [];
      for (let j = i; j >= 0; j = parents[j]) path.unshift(j);
      const outs = runSteps(c, prompt, path.map((j, d) => ({ rows: row(j), startPos: promptLength + d })));
      assert.deepEqual(tree.subarray(i * outWidth, (i + 1) * outWidth), outs[outs.length - 1], `prompt ${promptLength}: tree token ${i} (path ${path.join(' ')})`);
    });
    assert.notDeepEqual(chain, runDense(c, prompt, drafts, promptLength), 'the budget leaves blocks out');
  }
  // A recent window of one block cannot reach past a tree: its tokens' candidates would include blocks the chunk fills.
  const narrow: Case = { ...c, sparse: { tokenBudget: 16, sinkTokens: 4, windowTokens: 4 } };
  assert.throws(() => runSteps(narrow, random.floats(63 * rowWidth, 2), [{ rows: random.floats(4 * rowWidth, 2), startPos: 63, parents: [-1, 0, 0, 1], verification: true }]), /the recent window must reach past the tree/);
});

/** The chain's outputs under dense attention (the same cache contents, no selection). */
function runDense(c: Case, prompt: Float32Array, drafts: Float32Array, promptLength: number): Float32Array {
  return runSteps({ ...c, sparse: { tokenBudget: 4096, sinkTokens: c.sparse.sinkTokens, windowTokens: c.sparse.windowTokens } }, prompt, [{ rows: drafts, startPos: promptLength, verification: true }])[0];
}
