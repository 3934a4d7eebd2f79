import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pagedAttention, type CpuAttentionParams } from './attention.ts';
import { rotateHead } from './rope-cache-write.ts';
import { describeBatch } from '../../../step/batch.ts';
import { TestRandom, testSeed } from '../../../../test/helpers/cpu-random.ts';
import { plainRopeTable } from '../../../../test/helpers/cpu-random-llama.ts';
import { float32Pool } from './kv-codes.ts';

const random = new TestRandom(testSeed('streaming-attention'));
const THETA = 10000;

/** RoPE at `position` straight from its definition (float64 angles, rotate_half pairs over the leading rotaryDim dims). */
function rope(x: ArrayLike<number>, position: number, rotaryDim: number): number[] {
  const out = Array.from(x);
  const half = rotaryDim / 2;
  for (let i = 0; i < half; i++) {
    const angle = position * THETA ** (-(2 * i) / rotaryDim);
    out[i] = x[i] * Math.cos(angle) - x[half + i] * Math.sin(angle);
    out[half + i] = x[half + i] * Math.cos(angle) + x[i] * Math.sin(angle);
  }
  return out;
}

/**
 * StreamingLLM as the paper defines it: the cache holds the first `sinks` tokens and the latest
 * `window` (the query's own included); keys are cached before rotary and, like the query, rotated
 * at their position inside the cache (their index among the kept tokens) when attention runs.
 */
function paperAttention(q: Float32Array, position: number, rawKeys: Float32Array[], values: Float32Array[], c: Case): number[] {
  const { numHeads, numKvHeads, headDim, rotaryDim, sinks, window } = c;
  const kept: number[] = [];
  for (let j = 0; j <= position; j++) if (j < sinks || j > position - window) kept.push(j);
  const queryCachePosition = kept.length - 1;
  const out: number[] = [];
  for (let h = 0; h < numHeads; h++) {
    const kv = Math.floor(h / (numHeads / numKvHeads));
    const qh = rope(q.subarray(h * headDim, (h + 1) * headDim), queryCachePosition, rotaryDim);
    const scores = kept.map((j, cachePosition) => {
      const k = rope(rawKeys[j].subarray(kv * headDim, (kv + 1) * headDim), cachePosition, rotaryDim);
      return qh.reduce((s, qd, d) => s + qd * k[d], 0) * headDim ** -0.5;
    });
    const max = Math.max(...scores);
    const exps = scores.map((s) => Math.exp(s - max));
    const sum = exps.reduce((a, b) => a + b, 0);
    for (let d = 0; d < headDim; d++) out.push(kept.reduce((acc, j, i) => acc + (exps[i] / sum) * values[j][kv * headDim + d], 0));
  }
  return out;
}

interface Case {
  headDim: number;
  rotaryDim: number;
  numHeads: number;
  numKvHeads: number;
  blockSize: number;
  sinks: number;
  window: number;
  /** [context length, query length] per sequence. */
  seqs: [number, number][];
}

/**
 * Keel's way: keys rotated at their absolute positions as ropeAndCacheWrite caches them, queries
 * unrotated into pagedAttention with the streaming parameters, blocks wholly between the sinks and
 * the window of each sequence's first query absent from its table (they were freed).
 */
function runCase(c: Case): void {
  const { headDim, rotaryDim, numHeads, numKvHeads, blockSize } = c;
  const longest = Math.max(...c.seqs.map(([len]) => len));
  const table = plainRopeTable(headDim, THETA, longest, rotaryDim);
  const params: CpuAttentionParams = {
    numHeads, numKvHeads, headDim, scale: headDim ** -0.5, slidingWindow: null, softcap: null, sinks: null,
    streaming: { sinks: c.sinks, window: c.window, rope: table },
  };
  const kvWidth = numKvHeads * headDim;
  const rowWidth = (numHeads + 2 * numKvHeads) * headDim;
  const numBlocks = c.seqs.reduce((n, [len]) => n + Math.ceil(len / blockSize), 0) + 1;
  const nullBlock = numBlocks - 1;
  const freeBlocks = random.shuffled(Array.from({ length: numBlocks - 1 }, (_, i) => i));
  const pools = { keys: new Float32Array(numBlocks * blockSize * kvWidth).fill(NaN), values: new Float32Array(numBlocks * blockSize * kvWidth).fill(NaN) };
  const contexts: { keys: Float32Array[]; values: Float32Array[] }[] = [];
  const chunks = c.seqs.map(([len, queryLen]) => {
    const start = len - queryLen;
    const firstKept = Math.floor(Math.max(0, start - c.window + 1) / blockSize);
    const sinkBlocks = Math.ceil(c.sinks / blockSize);
    const blockTable = Array.from({ length: Math.ceil(len / blockSize) }, (_, b) => (b >= sinkBlocks && b < firstKept ? nullBlock : freeBlocks.pop()!));
    const context = { keys: [] as Float32Array[], values: [] as Float32Array[] };
    for (let j = 0; j < len; j++) {
      const key = random.floats(kvWidth);
      const value = random.floats(kvWidth);
      context.keys.push(key);
      context.values.push(value);
      const block = blockTable[Math.floor(j / blockSize)];
      if (block === nullBlock) continue;
      const slotAt = (block * blockSize + (j % blockSize)) * kvWidth;
      for (let h = 0; h < numKvHeads; h++) rotateHead(key, h * headDim, table, j, pools.keys, slotAt + h * headDim, headDim);
      pools.values.set(value, slotAt);
    }
    contexts.push(context);
    return { tokens: new Array<number>(queryLen).fill(0), startPos: start, blockTables: [blockTable] };
  });
  const batch = describeBatch(chunks, blockSize);
  const qkv = random.floats(batch.numTokens * rowWidth);
  const out = new Float32Array(batch.numTokens * numHeads * headDim).fill(NaN);
  pagedAttention(qkv, { keys: float32Pool(pools.keys, numKvHeads, headDim), values: float32Pool(pools.values, numKvHeads, headDim), kScale: 1, vScale: 1 }, blockSize, batch, params, out);

  const label = JSON.stringify(c);
  c.seqs.forEach((_, s) => {
    for (let t = batch.queryStartLoc[s]; t < batch.queryStartLoc[s + 1]; t++) {
      const q = qkv.subarray(t * rowWidth, t * rowWidth + numHeads * headDim);
      const expected = paperAttention(q, batch.positions[t], contexts[s].keys, contexts[s].values, c);
      const actual = out.subarray(t * numHeads * headDim, (t + 1) * numHeads * headDim);
      for (let i = 0; i < expected.length; i++) {
        assert.ok(Math.abs(actual[i] - expected[i]) <= 2e-5, `${label} token ${t} (position ${batch.positions[t]}) [${i}]: ${actual[i]} vs ${expected[i]}`);
      }
    }
  });
}

test('StreamingLLM attention equals the paper\'s: sinks and window kept, positions inside the cache, past the window and before it', () => {
  for (let i = 0; i < 30; i++) {
    const headDim = random.pick([4, 8, 16, 32]);
    const numKvHeads = random.pick([1, 2]);
    const sinks = random.int(1, 6);
    const window = random.int(1, 24);
    const seqs: [number, number][] = Array.from({ length: random.int(1, 4) }, () => {
      const len = random.int(1, 80);
      return [len, random.pick([1, 1, len, random.int(1, len)])];
    });
    runCase({ headDim, rotaryDim: random.pick([headDim, headDim / 2]), numHeads: numKvHeads * random.pick([1, 2, 3]), numKvHeads, blockSize: random.pick([1, 4, 16]), sinks, window, seqs });
  }
});

test('a sink inside the window is scored once, as a window key', () => {
  // Positions 0..9 with sinks 4 and window 8: at position 9 the window starts at 2, so sinks 0 and 1 lie behind it and 2, 3 inside.
  runCase({ headDim: 8, rotaryDim: 8, numHeads: 2, numKvHeads: 1, blockSize: 1, sinks: 4, window: 8, seqs: [[10, 10]] });
});

test('a decode long past the window (a 200-token sequence, sinks 4, window 12) attends to 16 keys at cache positions 0..15', () => {
  runCase({ headDim: 16, rotaryDim: 16, numHeads: 4, numKvHeads: 2, blockSize: 4, sinks: 4, window: 12, seqs: [[200, 1], [150, 5]] });
});
