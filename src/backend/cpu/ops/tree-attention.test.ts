import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pagedAttention, type CpuAttentionParams } from './attention.ts';
import { createKvPool, poolArrays, poolSlots, storeSlot, type CpuKvPool } from './kv-codes.ts';
import type { LayerKvPools } from './rope-cache-write.ts';
import type { KvCacheDtype } from '../../../step/kv-cache-layout.ts';
import { describeBatch, type SequenceChunk } from '../../../step/batch.ts';
import { TestRandom, testSeed } from '../../../../test/helpers/cpu-random.ts';

const random = new TestRandom(testSeed('tree-attention'));

/** Random parents of a token tree of `size` tokens: each token's parent is an earlier one. */
function randomTree(size: number): number[] {
  return Array.from({ length: size }, (_, i) => (i === 0 ? -1 : random.int(Math.max(0, i - 4), i - 1)));
}

interface TreeCase {
  headDim: number;
  numHeads: number;
  numKvHeads: number;
  blockSize: number;
  slidingWindow: number | null;
  /** Per sequence: cached tokens before the chunk, and the chunk's tree parents (null: a causal chunk of `causalLen`). */
  seqs: { context: number; parents: number[] | null; causalLen?: number }[];
  /** The cache's dtype; absent: auto (float32). */
  dtype?: KvCacheDtype;
}

/** A layer's key and value pools of `slots` slots in `dtype` (fp8 with per-tensor scales other than 1). */
function emptyPools(dtype: KvCacheDtype, slots: number, numKvHeads: number, headDim: number): LayerKvPools {
  return { keys: createKvPool(dtype, slots, numKvHeads, headDim), values: createKvPool(dtype, slots, numKvHeads, headDim), kScale: 0.5, vScale: 2 };
}

/** Copies slot `from` of `src` to slot `to` of `dst` as stored (an int8 or int4 pool's scales too). */
function copySlot(src: CpuKvPool, from: number, dst: CpuKvPool, to: number): void {
  const dstArrays = poolArrays(dst);
  poolArrays(src).forEach((array, a) => {
    const width = array.length / poolSlots(src);
    dstArrays[a].set(array.subarray(from * width, (from + 1) * width), to * width);
  });
}

/**
 * A tree token's attention equals a causal attention's for the last token of the sequence laid
 * out linearly as the context, then the token's path from the root: the tree batch is run once,
 * and each of its tokens against a linear batch holding the same keys and values along its path.
 */
function runTreeCase(c: TreeCase): void {
  const { headDim, numHeads, numKvHeads, blockSize } = c;
  const shape: CpuAttentionParams = { numHeads, numKvHeads, headDim, scale: headDim ** -0.5, slidingWindow: c.slidingWindow, softcap: null, sinks: null, streaming: null };
  const kvWidth = numKvHeads * headDim;
  const rowWidth = (numHeads + 2 * numKvHeads) * headDim;
  const lengths = c.seqs.map((s) => s.context + (s.parents?.length ?? s.causalLen!));
  const numBlocks = lengths.reduce((n, len) => n + Math.ceil(len / blockSize), 0) + 2;
  const freeBlocks = random.shuffled(Array.from({ length: numBlocks }, (_, i) => i));
  const dtype = c.dtype ?? 'auto';
  const pools = emptyPools(dtype, numBlocks * blockSize, numKvHeads, headDim);
  for (let slot = 0; slot < numBlocks * blockSize; slot++) {
    storeSlot(pools.keys, slot, random.floats(kvWidth), 0, pools.kScale);
    storeSlot(pools.values, slot, random.floats(kvWidth), 0, pools.vScale);
  }
  const chunks: SequenceChunk[] = c.seqs.map((s, i) => {
    const len = lengths[i];
    const chunk: SequenceChunk = { tokens: new Array<number>(len - s.context).fill(0), startPos: s.context, blockTables: [freeBlocks.splice(0, Math.ceil(len / blockSize))] };
    if (s.parents !== null) chunk.treeParents = s.parents;
    return chunk;
  });
  const batch = describeBatch(chunks, blockSize);
  const qkv = random.floats(batch.numTokens * rowWidth);
  const out = new Float32Array(batch.numTokens * numHeads * headDim).fill(NaN);
  pagedAttention(qkv, pools, blockSize, batch, shape, out);

  const slotOf = (chunk: SequenceChunk, index: number) => chunk.blockTables[0][Math.floor(index / blockSize)] * blockSize + (index % blockSize);
  c.seqs.forEach((s, i) => {
    const chunk = chunks[i];
    for (let k = 0; k < chunk.tokens.length; k++) {
      const t = batch.queryStartLoc[i] + k;
      // The cache indices along the token's path: the context, then its ancestors and itself.
      const path: number[] = [];
      if (s.parents === null) for (let j = 0; j <= k; j++) path.push(s.context + j);
      else for (let j = k; j >= 0; j = s.parents[j]) path.unshift(s.context + j);
      const linear = [...Array.from({ length: s.context }, (_, j) => j), ...path];
      assert.equal(batch.positions[t], linear.length - 1, `token ${t}'s position is its depth after the context`);
      const linearBlocks = Math.ceil(linear.length / blockSize);
      const linearPools = emptyPools(dtype, linearBlocks * blockSize, numKvHeads, headDim);
      linear.forEach((index, j) => {
        copySlot(pools.keys, slotOf(chunk, index), linearPools.keys, j);
        copySlot(pools.values, slotOf(chunk, index), linearPools.values, j);
      });
      const single = describeBatch([{ tokens: [0], startPos: linear.length - 1, blockTables: [Array.from({ length: linearBlocks }, (_, b) => b)] }], blockSize);
      const expected = new Float32Array(numHeads * headDim);
      pagedAttention(qkv.slice(t * rowWidth, (t + 1) * rowWidth), linearPools, blockSize, single, shape, expected);
      const actual = out.subarray(t * numHeads * headDim, (t + 1) * numHeads * headDim);
      for (let d = 0; d < expected.length; d++) {
        assert.ok(Math.abs(actual[d] - expected[d]) <= 1e-6, `${JSON.stringify(c)} token ${t} [${d}]: ${actual[d]} vs ${expected[d]}`);
      }
    }
  });
}

test('a tree token attends to the context, its ancestors and itself, at position context + depth', () => {
  for (let i = 0; i < 30; i++) {
    const numKvHeads = random.pick([1, 2]);
    const seqs = Array.from({ length: random.int(1, 4) }, () => {
      const context = random.int(0, 40);
      return random.pick([true, true, false]) ? { context, parents: randomTree(random.int(1, 40)) } : { context, parents: null, causalLen: random.int(1, 20) };
    });
    runTreeCase({
      headDim: random.pick([4, 16]),
      numHeads: numKvHeads * random.pick([1, 3]),
      numKvHeads,
      blockSize: random.pick([1, 4, 16]),
      // Windows wider than any tree's depth, as the engine requires.
      slidingWindow: random.pick([null, 48, 64]),
      seqs,
    });
  }
});

test("with an 8-bit or int4 cache, a tree token reads the dequantized keys and values at its path's cache indices", () => {
  for (const dtype of ['fp8_e4m3', 'int8', 'int4'] as const) {
    for (let i = 0; i < 8; i++) {
      const numKvHeads = random.pick([1, 2]);
      const seqs = Array.from({ length: random.int(1, 3) }, () => ({ context: random.int(0, 30), parents: randomTree(random.int(1, 24)) }));
      runTreeCase({ headDim: 8, numHeads: 2 * numKvHeads, numKvHeads, blockSize: random.pick([4, 16]), slidingWindow: random.pick([null, 40]), seqs, dtype });
    }
  }
});

test('trees wider than one mask word: bits past 32 tokens', () => {
  runTreeCase({ headDim: 8, numHeads: 2, numKvHeads: 1, blockSize: 4, slidingWindow: null, seqs: [{ context: 5, parents: randomTree(70) }, { context: 3, parents: null, causalLen: 50 }] });
});

test('a chain is a causal chunk: the same positions and outputs with or without the tree', () => {
  const parents = Array.from({ length: 9 }, (_, i) => i - 1);
  const chain = describeBatch([{ tokens: new Array<number>(9).fill(0), startPos: 4, blockTables: [[0, 1, 2, 3]], treeParents: parents }], 4);
  const causal = describeBatch([{ tokens: new Array<number>(9).fill(0), startPos: 4, blockTables: [[0, 1, 2, 3]] }], 4);
  assert.deepEqual([...chain.positions], [...causal.positions]);
  assert.deepEqual([...chain.slotMapping], [...causal.slotMapping]);
});

test('a tree whose parent is not an earlier token is refused', () => {
  assert.throws(() => describeBatch([{ tokens: [1, 2, 3], startPos: 0, blockTables: [[0]], treeParents: [-1, 2, 0] }], 4), /token 1's parent 2 is not an earlier token/);
  assert.throws(() => describeBatch([{ tokens: [1, 2], startPos: 0, blockTables: [[0]], treeParents: [0, 0] }], 4), /the root has parent -1/);
});
