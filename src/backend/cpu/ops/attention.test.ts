import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { QueryTemperature } from '../../backend.ts';
import { pagedAttention, type CpuAttentionParams } from './attention.ts';
import { describeBatch } from '../../../step/batch.ts';
import { TestRandom, testSeed } from '../../../../test/helpers/cpu-random.ts';
import { float32Pool } from './kv-codes.ts';

const random = new TestRandom(testSeed('attention'));

/** A sequence's whole context as plain per-position lists, before any paging. */
interface Context {
  keys: Float32Array[]; // [position] -> [numKvHeads * headDim]
  values: Float32Array[];
  queryLen: number; // the last queryLen positions are this step's tokens
}

// Straight from the definition, on contiguous per-sequence K/V (no block tables): a sink is one more
// score in the softmax, whose value is zero.
function naiveAttention(q: Float32Array, position: number, context: Context, shape: CpuAttentionParams): number[] {
  const { numHeads, numKvHeads, headDim, slidingWindow, softcap, sinks } = shape;
  const chunk = shape.attentionChunk ?? null;
  const temperature = shape.queryTemperature ?? null;
  // The temperature multiplies the query, so every score.
  const scale = shape.scale * (temperature === null ? 1 : 1 + temperature.attnScale * Math.log(1 + Math.floor((position + temperature.positionOffset) / temperature.floorScale)));
  const out: number[] = [];
  for (let h = 0; h < numHeads; h++) {
    const kv = Math.floor(h / (numHeads / numKvHeads));
    const visible = [];
    for (let j = 0; j <= position; j++) {
      const inWindow = slidingWindow === null || j > position - slidingWindow;
      const inChunk = chunk === null || Math.floor(j / chunk) === Math.floor(position / chunk);
      if (inWindow && inChunk) visible.push(j);
    }
    const scores = visible.map((j) => {
      let s = 0;
      for (let d = 0; d < headDim; d++) s += q[h * headDim + d] * context.keys[j][kv * headDim + d];
      return softcap === null ? s * scale : softcap * Math.tanh((s * scale) / softcap);
    });
    const withSink = sinks === null ? scores : [...scores, sinks[h]];
    const max = Math.max(...withSink);
    const exps = scores.map((s) => Math.exp(s - max));
    const sum = withSink.reduce((a, s) => a + Math.exp(s - max), 0);
    for (let d = 0; d < headDim; d++) out.push(visible.reduce((acc, j, i) => acc + (exps[i] / sum) * context.values[j][kv * headDim + d], 0));
  }
  return out;
}

interface Case {
  headDim: number;
  numHeads: number;
  numKvHeads: number;
  blockSize: number;
  slidingWindow: number | null;
  /** [context length, query length] per sequence. */
  seqs: [number, number][];
  scoreScale?: number;
  softcap?: number;
  withSinks?: boolean;
  attentionChunk?: number;
  queryTemperature?: QueryTemperature;
}

function runCase(c: Case): void {
  const { headDim, numHeads, numKvHeads, blockSize } = c;
  const sinks = c.withSinks ? random.floats(numHeads, 3) : null;
  const shape: CpuAttentionParams = {
    numHeads,
    numKvHeads,
    headDim,
    scale: headDim ** -0.5,
    slidingWindow: c.slidingWindow,
    softcap: c.softcap ?? null,
    sinks,
    streaming: null,
    attentionChunk: c.attentionChunk ?? null,
    queryTemperature: c.queryTemperature ?? null,
  };
  const kvWidth = numKvHeads * headDim;
  const rowWidth = (numHeads + 2 * numKvHeads) * headDim;
  const blocksNeeded = c.seqs.map(([len]) => Math.ceil(len / blockSize));
  const numBlocks = blocksNeeded.reduce((a, b) => a + b, 0) + 3;
  // Blocks handed out in shuffled order, so no sequence's blocks are contiguous or ordered.
  const freeBlocks = random.shuffled(Array.from({ length: numBlocks }, (_, i) => i));
  const pools = { keys: random.floats(numBlocks * blockSize * kvWidth), values: random.floats(numBlocks * blockSize * kvWidth) };
  const contexts: Context[] = [];
  const chunks = c.seqs.map(([len, queryLen], s) => {
    const blockTable = freeBlocks.splice(0, blocksNeeded[s]);
    const context: Context = { keys: [], values: [], queryLen };
    for (let j = 0; j < len; j++) {
      const key = random.floats(kvWidth, c.scoreScale ?? 1);
      const value = random.floats(kvWidth);
      const slot = blockTable[Math.floor(j / blockSize)] * blockSize + (j % blockSize);
      pools.keys.set(key, slot * kvWidth);
      pools.values.set(value, slot * kvWidth);
      context.keys.push(key);
      context.values.push(value);
    }
    contexts.push(context);
    return { tokens: new Array<number>(queryLen).fill(0), startPos: len - queryLen, blockTables: [blockTable] };
  });
  const batch = describeBatch(chunks, blockSize);
  const qkv = random.floats(batch.numTokens * rowWidth, c.scoreScale ?? 1);
  const out = new Float32Array(batch.numTokens * numHeads * headDim).fill(NaN);
  pagedAttention(qkv, { keys: float32Pool(pools.keys, numKvHeads, headDim), values: float32Pool(pools.values, numKvHeads, headDim), kScale: 1, vScale: 1 }, blockSize, batch, shape, out);

  const label = JSON.stringify(c);
  for (let s = 0; s < c.seqs.length; s++) {
    for (let t = batch.queryStartLoc[s]; t < batch.queryStartLoc[s + 1]; t++) {
      const q = qkv.subarray(t * rowWidth, t * rowWidth + numHeads * headDim);
      const expected = naiveAttention(q, batch.positions[t], contexts[s], shape);
      const actual = out.subarray(t * numHeads * headDim, (t + 1) * numHeads * headDim);
      for (let i = 0; i < expected.length; i++) {
        assert.ok(Math.abs(actual[i] - expected[i]) <= 1e-6, `${label} token ${t} [${i}]: ${actual[i]} vs ${expected[i]}`);
      }
    }
  }
}

const gqa = (numKvHeads: number, group: number) => ({ numHeads: numKvHeads * group, numKvHeads });

test('matches naive attention over head dims, GQA ratios (1, 2, 4, MQA) and block sizes, crossing block boundaries', () => {
  for (const headDim of [2, 8, 64, 96, 128]) {
    for (const heads of [gqa(2, 1), gqa(2, 2), gqa(1, 4), gqa(1, 6)]) {
      for (const blockSize of [1, 4, 16]) {
        // Contexts of 17 and 35 cross block boundaries for every block size; one decode, one prefill chunk.
        runCase({ headDim, ...heads, blockSize, slidingWindow: null, seqs: [[17, 1], [35, 9]] });
      }
    }
  }
});

test('sliding window masks keys at or before position - window', () => {
  for (const slidingWindow of [1, 3, 8, 40]) {
    for (const blockSize of [1, 4, 16]) {
      runCase({ headDim: 8, ...gqa(2, 2), blockSize, slidingWindow, seqs: [[30, 1], [21, 21], [9, 4]] });
    }
  }
});

test('mixed batch: decodes, a whole prompt and a mid-prompt chunk in one step', () => {
  for (let i = 0; i < 25; i++) {
    const headDim = random.pick([2, 4, 16, 64]);
    const heads = random.pick([gqa(1, 1), gqa(2, 1), gqa(2, 2), gqa(2, 4), gqa(1, 3)]);
    const seqs: [number, number][] = Array.from({ length: random.int(1, 5) }, () => {
      const len = random.int(1, 45);
      const kind = random.pick(['decode', 'prompt', 'chunk'] as const);
      return [len, kind === 'decode' ? 1 : kind === 'prompt' ? len : random.int(1, len)];
    });
    runCase({ headDim, ...heads, blockSize: random.pick([1, 4, 16]), slidingWindow: random.pick([null, null, random.int(1, 20)]), seqs });
  }
});

test('softmax stays finite when scores are huge (max is subtracted before exp)', () => {
  runCase({ headDim: 16, ...gqa(1, 2), blockSize: 4, slidingWindow: null, seqs: [[13, 3]], scoreScale: 40 });
});

test('soft-capping bends every score to cap · tanh(score / cap) before the softmax', () => {
  for (const softcap of [0.5, 4, 50]) {
    runCase({ headDim: 16, ...gqa(2, 2), blockSize: 4, slidingWindow: null, seqs: [[19, 1], [11, 11]], scoreScale: 6, softcap });
    runCase({ headDim: 8, ...gqa(1, 4), blockSize: 16, slidingWindow: 5, seqs: [[23, 3]], scoreScale: 6, softcap });
  }
});

test('a sink logit per head joins the softmax denominator, with and without a window', () => {
  runCase({ headDim: 16, ...gqa(2, 2), blockSize: 4, slidingWindow: null, seqs: [[19, 1], [11, 11]], withSinks: true });
  runCase({ headDim: 8, ...gqa(1, 4), blockSize: 1, slidingWindow: 3, seqs: [[12, 4], [1, 1]], withSinks: true, scoreScale: 3 });
});

test('chunked attention: a query sees only the keys of its chunk, alone and under a window', () => {
  for (const attentionChunk of [1, 4, 7, 16]) {
    for (const blockSize of [1, 4, 16]) {
      // Decodes at a chunk's first position and past it, a prompt crossing several chunks, a chunk starting mid-chunk.
      runCase({ headDim: 8, ...gqa(2, 2), blockSize, slidingWindow: null, seqs: [[17, 1], [23, 1], [30, 30], [21, 9]], attentionChunk });
    }
    runCase({ headDim: 8, ...gqa(1, 4), blockSize: 4, slidingWindow: 5, seqs: [[19, 6], [9, 9]], attentionChunk });
  }
});

test('query temperature scales each query by 1 + attnScale · ln(1 + floor((p + offset) / floorScale)), positions counted from 1 (Llama 4) or 0 (Ministral 3)', () => {
  for (const positionOffset of [1, 0]) {
    for (const floorScale of [1, 3, 8]) {
      runCase({ headDim: 16, ...gqa(2, 2), blockSize: 4, slidingWindow: null, seqs: [[29, 1], [20, 20], [13, 5]], queryTemperature: { floorScale, attnScale: 0.4, positionOffset } });
    }
  }
});
