import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { IndexerParams } from '../../backend.ts';
import { describeBatch } from '../../../step/batch.ts';
import { TestRandom, testSeed } from '../../../../test/helpers/cpu-random.ts';
import { plainRopeTable } from '../../../../test/helpers/cpu-random-llama.ts';
import { createKvPool, float32Pool, loadSlot, storeSlot } from './kv-codes.ts';
import { indexerRopeAndCacheWrite, indexerTopK } from './lightning-indexer.ts';
import { selectionMargin } from './selection-margin.ts';

const random = new TestRandom(testSeed('lightning indexer ops'));

function randomIndexer(topK = random.int(1, 6)): IndexerParams {
  const ropeDim = 2 * random.int(1, 3);
  const numHeads = random.int(1, 4);
  const headDim = ropeDim + random.int(0, 5);
  return { numHeads, headDim, ropeDim, topK, scale: headDim ** -0.5, weightScale: numHeads ** -0.5 };
}

test('indexerRopeAndCacheWrite layer-normalizes the key, rotates the leading rope dims of it and of every query head, and caches the key', () => {
  for (let trial = 0; trial < 20; trial++) {
    const indexer = randomIndexer();
    const { numHeads, headDim, ropeDim } = indexer;
    const half = ropeDim / 2;
    const rope = plainRopeTable(ropeDim, 10000, 64);
    const numTokens = random.int(1, 5);
    const numSlots = numTokens + random.int(0, 4);
    const q = random.floats(numTokens * numHeads * headDim);
    const k = random.floats(numTokens * headDim, 3);
    const [weight, bias] = [random.floats(headDim), random.floats(headDim)];
    const rows = Int32Array.from({ length: numTokens }, () => random.int(0, 63));
    const slots = Int32Array.from(random.shuffled(Array.from({ length: numSlots }, (_, i) => i)).slice(0, numTokens));
    const pool = new Float32Array(numSlots * headDim);
    const [q0, k0] = [q.slice(), k.slice()];
    indexerRopeAndCacheWrite(q, k, rows, slots, weight, bias, 1e-6, rope, float32Pool(pool, 1, headDim), indexer);
    const rotate = (x: number[], row: number) =>
      x.map((v, i) => {
        if (i >= ropeDim) return v;
        const j = i % half;
        const [c, s] = [rope.cos[row * half + j], rope.sin[row * half + j]];
        return i < half ? v * c - x[i + half] * s : v * c + x[i - half] * s;
      });
    for (let t = 0; t < numTokens; t++) {
      const key = Array.from(k0.subarray(t * headDim, (t + 1) * headDim));
      const mean = key.reduce((a, v) => a + v, 0) / headDim;
      const variance = key.reduce((a, v) => a + (v - mean) ** 2, 0) / headDim;
      const expected = rotate(key.map((v, i) => ((v - mean) / Math.sqrt(variance + 1e-6)) * weight[i] + bias[i]), rows[t]);
      expected.forEach((v, i) => assert.ok(Math.abs(k[t * headDim + i] - v) < 1e-5, `trial ${trial} token ${t} key[${i}]`));
      assert.deepEqual(pool.subarray(slots[t] * headDim, (slots[t] + 1) * headDim), k.subarray(t * headDim, (t + 1) * headDim));
      for (let h = 0; h < numHeads; h++) {
        const at = (t * numHeads + h) * headDim;
        const want = rotate(Array.from(q0.subarray(at, at + headDim)), rows[t]);
        want.forEach((v, i) => assert.ok(Math.abs(q[at + i] - v) < 1e-6, `trial ${trial} token ${t} head ${h} q[${i}]`));
      }
    }
  }
});

test('an 8-bit cache keeps each indexer key with a scale of its own: int8 codes at max|k| / 127, e4m3 codes at max|k| / 448', () => {
  for (const dtype of ['int8', 'fp8_e4m3'] as const) {
    for (let trial = 0; trial < 10; trial++) {
      const indexer = randomIndexer();
      const { headDim, ropeDim } = indexer;
      const numTokens = random.int(1, 5);
      const q = random.floats(numTokens * indexer.numHeads * headDim);
      const k = random.floats(numTokens * headDim, 3);
      const slots = Int32Array.from(random.shuffled(Array.from({ length: numTokens + 2 }, (_, i) => i)).slice(0, numTokens));
      const pool = createKvPool(dtype, numTokens + 2, 1, headDim, true);
      const rows = Int32Array.from({ length: numTokens }, () => random.int(0, 63));
      indexerRopeAndCacheWrite(q, k, rows, slots, random.floats(headDim), random.floats(headDim), 1e-6, plainRopeTable(ropeDim, 10000, 64), pool, indexer);
      const kept = new Float32Array(headDim);
      for (let t = 0; t < numTokens; t++) {
        const key = k.subarray(t * headDim, (t + 1) * headDim);
        loadSlot(pool, slots[t], 1, kept, 0);
        const max = key.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
        const scale = pool.scales[slots[t]];
        assert.ok(Math.abs(scale - max / (dtype === 'int8' ? 127 : 448)) <= 1e-6 * max, `${dtype} trial ${trial} token ${t}: scale ${scale}`);
        // Half a step of the format: int8's scale / 2; e4m3's 2^-4 relative (its subnormal steps: 2^-9 × the scale).
        key.forEach((v, i) => {
          const step = dtype === 'int8' ? scale / 2 : Math.max(Math.abs(v) / 16, 2 ** -10 * scale);
          assert.ok(Math.abs(kept[i] - v) <= step * (1 + 1e-6), `${dtype} trial ${trial} token ${t} key[${i}]: ${v} kept as ${kept[i]}`);
        });
      }
    }
  }
});

test('indexerTopK keeps the topK best index scores of the positions each token sees, in position order, ties to the earlier (float32, int8 and fp8 keys)', () => {
  for (let trial = 0; trial < 45; trial++) {
    const dtype = (['auto', 'int8', 'fp8_e4m3'] as const)[trial % 3];
    const indexer = randomIndexer();
    const { numHeads, headDim, topK } = indexer;
    const blockSize = random.pick([1, 4, 16]);
    const lens = Array.from({ length: random.int(1, 3) }, () => random.int(1, 25));
    const numBlocks = lens.reduce((n, len) => n + Math.ceil(len / blockSize), 0);
    const free = random.shuffled(Array.from({ length: numBlocks }, (_, i) => i));
    const tables = lens.map((len) => free.splice(0, Math.ceil(len / blockSize)));
    // Keys drawn from a few values: equal keys score equal, so ties are common.
    const distinct = Array.from({ length: 3 }, () => random.floats(headDim));
    const keyPool = createKvPool(dtype, numBlocks * blockSize, 1, headDim, true);
    for (let slot = 0; slot < numBlocks * blockSize; slot++) storeSlot(keyPool, slot, random.pick(distinct), 0, 1);
    // What the scores must read: the values the pool's codes stand for.
    const pool = new Float32Array(numBlocks * blockSize * headDim);
    for (let slot = 0; slot < numBlocks * blockSize; slot++) loadSlot(keyPool, slot, 1, pool, slot * headDim);
    const batch = describeBatch(lens.map((len, s) => {
      const queryLen = random.int(1, len);
      return { tokens: new Array<number>(queryLen).fill(0), startPos: len - queryLen, blockTables: [tables[s]] };
    }), blockSize);
    const q = random.floats(batch.numTokens * numHeads * headDim);
    const weights = random.floats(batch.numTokens * numHeads);
    const out = new Int32Array(batch.numTokens * topK);
    const margins = new Map<number, number>();
    indexerTopK(q, weights, keyPool, blockSize, batch, indexer, out, (t, margin) => margins.set(t, margin));
    for (let s = 0; s < lens.length; s++) {
      for (let t = batch.queryStartLoc[s]; t < batch.queryStartLoc[s + 1]; t++) {
        const visible = batch.positions[t] + 1;
        const score = (j: number) => {
          const slot = tables[s][Math.floor(j / blockSize)] * blockSize + (j % blockSize);
          let total = 0;
          for (let h = 0; h < numHeads; h++) {
            let dot = 0;
            for (let d = 0; d < headDim; d++) dot += q[(t * numHeads + h) * headDim + d] * pool[slot * headDim + d];
            total += indexer.weightScale * weights[t * numHeads + h] * Math.max(0, indexer.scale * dot);
          }
          return total;
        };
        const ranked = Array.from({ length: visible }, (_, j) => j).sort((a, b) => score(b) - score(a) || a - b);
        // A token that sees more positions than it keeps reports how close its choice came.
        const margin = visible > topK ? selectionMargin(ranked.map(score), topK) : undefined;
        assert.ok(margin === margins.get(t) || Math.abs(margin! - margins.get(t)!) < 1e-9, `${dtype} trial ${trial} token ${t}: margin ${margins.get(t)} for ${margin}`);
        const expected = ranked.slice(0, topK).sort((a, b) => a - b);
        while (expected.length < topK) expected.push(-1);
        assert.deepEqual(Array.from(out.subarray(t * topK, (t + 1) * topK)), expected, `${dtype} trial ${trial} token ${t}`);
      }
    }
  }
});
