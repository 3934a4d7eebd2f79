import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { MlaParams } from '../../backend.ts';
import { headwiseLinear, mlaAttention, mlaRopeAndCacheWrite } from './mla.ts';
import { describeBatch } from '../../../step/batch.ts';
import { KeelError } from '../../../errors.ts';
import { TestRandom, testSeed } from '../../../../test/helpers/cpu-random.ts';
import { plainRopeTable } from '../../../../test/helpers/cpu-random-llama.ts';
import { float32Pool } from './kv-codes.ts';

const random = new TestRandom(testSeed('mla ops'));

function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tolerance: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < expected.length; i++) {
    assert.ok(Math.abs(actual[i] - expected[i]) <= tolerance * Math.max(1, Math.abs(expected[i])), `${what}[${i}]: ${actual[i]} vs ${expected[i]}`);
  }
}

function randomMla(): MlaParams {
  const ropeDim = 2 * random.int(1, 4);
  return { numHeads: random.int(1, 5), latentDim: random.int(1, 12), ropeDim, nopeDim: random.int(1, 6), scale: random.uniform(0.1, 0.6) };
}

test('headwiseLinear multiplies each head\'s leading inputs by its own matrix', () => {
  for (let trial = 0; trial < 20; trial++) {
    const [rows, heads, outDim, inDim] = [random.int(1, 5), random.int(1, 4), random.int(1, 7), random.int(1, 6)];
    const width = inDim + random.int(0, 3);
    const x = random.floats(rows * heads * width);
    const w = random.floats(heads * outDim * inDim);
    const out = new Float32Array(rows * heads * outDim).fill(NaN);
    headwiseLinear(x, rows, heads, width, w, outDim, inDim, out);
    // Head h of row r: the slice x[r][h * width .. + inDim] as a column vector, times w[h] [outDim, inDim].
    const expected: number[] = [];
    for (let r = 0; r < rows; r++) {
      for (let h = 0; h < heads; h++) {
        const slice = Array.from(x.subarray((r * heads + h) * width, (r * heads + h) * width + inDim));
        for (let o = 0; o < outDim; o++) expected.push(slice.reduce((acc, v, i) => acc + v * w[(h * outDim + o) * inDim + i], 0));
      }
    }
    assertClose(out, expected, 1e-6, `trial ${trial}`);
  }
});

// (re, im) pairs (x[i], x[i + half]) times e^(i·angle), as complex numbers.
function rotated(values: ArrayLike<number>, cos: ArrayLike<number>, sin: ArrayLike<number>): number[] {
  const half = values.length / 2;
  const out = Array.from(values);
  for (let i = 0; i < half; i++) {
    out[i] = values[i] * cos[i] - values[half + i] * sin[i];
    out[half + i] = values[i] * sin[i] + values[half + i] * cos[i];
  }
  return out;
}

test('mlaRopeAndCacheWrite normalizes the latent, rotates k_rope and every q_rope, scales queries by their temperature, and writes the row to its slot', () => {
  for (let trial = 0; trial < 20; trial++) {
    // Every other trial with Mistral 4's query temperature, read at positions the rotary rows need not equal.
    const temperature = trial % 2 === 1 ? { floorScale: random.int(1, 16), attnScale: random.uniform(0.1, 1), positionOffset: 0 } : null;
    const mla = { ...randomMla(), queryTemperature: temperature };
    const { numHeads, latentDim, ropeDim, nopeDim } = mla;
    const rowWidth = latentDim + ropeDim;
    const headWidth = nopeDim + ropeDim;
    const rope = plainRopeTable(ropeDim, 10000, 64);
    const numTokens = random.int(1, 6);
    const numSlots = random.int(numTokens, 3 * numTokens);
    const q = random.floats(numTokens * numHeads * headWidth);
    const kv = random.floats(numTokens * rowWidth, 3);
    const weight = random.floats(latentDim);
    const eps = 1e-6;
    const rotaryRows = Int32Array.from({ length: numTokens }, () => random.int(0, 63));
    const positions = Int32Array.from({ length: numTokens }, () => random.int(0, 200));
    const slots = Int32Array.from(random.shuffled(Array.from({ length: numSlots }, (_, i) => i)).slice(0, numTokens));
    const pool = new Float32Array(numSlots * rowWidth);
    const [q0, kv0] = [q.slice(), kv.slice()];
    mlaRopeAndCacheWrite(q, kv, rotaryRows, positions, slots, weight, eps, rope, float32Pool(pool, 1, rowWidth), mla);

    for (let t = 0; t < numTokens; t++) {
      const tableRow = (table: Float32Array) => table.subarray(rotaryRows[t] * (ropeDim / 2), (rotaryRows[t] + 1) * (ropeDim / 2));
      const factor = temperature === null ? 1 : 1 + temperature.attnScale * Math.log(1 + Math.floor(positions[t] / temperature.floorScale));
      const [cos, sin] = [tableRow(rope.cos), tableRow(rope.sin)];
      const latent = Array.from(kv0.subarray(t * rowWidth, t * rowWidth + latentDim));
      const rms = Math.sqrt(latent.reduce((a, v) => a + v * v, 0) / latentDim + eps);
      const expectedRow = [...latent.map((v, i) => (v / rms) * weight[i]), ...rotated(kv0.subarray(t * rowWidth + latentDim, (t + 1) * rowWidth), cos, sin)];
      assertClose(kv.subarray(t * rowWidth, (t + 1) * rowWidth), expectedRow, 1e-6, `trial ${trial} token ${t} kv`);
      assert.deepEqual(pool.subarray(slots[t] * rowWidth, (slots[t] + 1) * rowWidth), kv.subarray(t * rowWidth, (t + 1) * rowWidth), `token ${t}'s slot`);
      for (let h = 0; h < numHeads; h++) {
        const headAt = (t * numHeads + h) * headWidth;
        assertClose(q.subarray(headAt, headAt + nopeDim), Array.from(q0.subarray(headAt, headAt + nopeDim), (v) => v * factor), 1e-6, `q_nope of head ${h}, only scaled`);
        const rope0 = rotated(q0.subarray(headAt + nopeDim, headAt + headWidth), cos, sin);
        assertClose(q.subarray(headAt + nopeDim, headAt + headWidth), rope0.map((v) => v * factor), 1e-6, `q_rope of head ${h}`);
      }
    }
    const written = new Set(slots);
    for (let slot = 0; slot < numSlots; slot++) {
      if (!written.has(slot)) assert.ok(pool.subarray(slot * rowWidth, (slot + 1) * rowWidth).every((v) => v === 0), `slot ${slot} is untouched`);
    }
  }
});

test('mlaRopeAndCacheWrite rejects rotary rows past the table and slots outside the pool', () => {
  const mla: MlaParams = { numHeads: 1, latentDim: 4, ropeDim: 2, nopeDim: 2, scale: 1 };
  const call = (row: number, slot: number) =>
    mlaRopeAndCacheWrite(new Float32Array(4), new Float32Array(6), Int32Array.of(row), Int32Array.of(row), Int32Array.of(slot), new Float32Array(4).fill(1), 1e-6, plainRopeTable(2, 10000, 8), float32Pool(new Float32Array(12), 1, 6), mla);
  assert.throws(() => call(8, 0), (e: unknown) => e instanceof KeelError && e.kind === 'context_overflow' && /rotary row 8/.test(e.message));
  assert.throws(() => call(0, 2), /slot 2/);
});

/**
 * Definition of the absorbed attention on a sequence's contiguous rows (no paging): for head h of
 * the query at `position`, softmax over rows 0..position of scale · (qLatent_h · latent_j + qRope_h · rope_j),
 * then the weighted sum of latents.
 */
function naiveMla(qLatent: ArrayLike<number>, qRope: ArrayLike<number>, position: number, rows: Float32Array[], mla: MlaParams, h: number): number[] {
  const { latentDim, ropeDim, scale } = mla;
  const scores = rows.slice(0, position + 1).map((row) => {
    let s = 0;
    for (let d = 0; d < latentDim; d++) s += qLatent[h * latentDim + d] * row[d];
    for (let d = 0; d < ropeDim; d++) s += qRope[d] * row[latentDim + d];
    return s * scale;
  });
  const max = Math.max(...scores);
  const exps = scores.map((s) => Math.exp(s - max));
  const sum = exps.reduce((a, b) => a + b, 0);
  return Array.from({ length: latentDim }, (_, d) => exps.reduce((acc, e, j) => acc + (e / sum) * rows[j][d], 0));
}

test('mlaAttention matches the definition over paged rows: decodes, whole prompts and chunks in one step', () => {
  for (let trial = 0; trial < 30; trial++) {
    const mla = randomMla();
    const { numHeads, latentDim, ropeDim, nopeDim } = mla;
    const rowWidth = latentDim + ropeDim;
    const headWidth = nopeDim + ropeDim;
    const blockSize = random.pick([1, 4, 16]);
    const seqs = Array.from({ length: random.int(1, 4) }, () => {
      const len = random.int(1, 40);
      const kind = random.pick(['decode', 'prompt', 'chunk'] as const);
      return { len, queryLen: kind === 'decode' ? 1 : kind === 'prompt' ? len : random.int(1, len) };
    });
    const blocksNeeded = seqs.map(({ len }) => Math.ceil(len / blockSize));
    const numBlocks = blocksNeeded.reduce((a, b) => a + b, 0) + 2;
    const free = random.shuffled(Array.from({ length: numBlocks }, (_, i) => i));
    const pool = random.floats(numBlocks * blockSize * rowWidth);
    const contexts: Float32Array[][] = [];
    const chunks = seqs.map(({ len, queryLen }, s) => {
      const blockTable = free.splice(0, blocksNeeded[s]);
      contexts.push(
        Array.from({ length: len }, (_, j) => {
          const slot = blockTable[Math.floor(j / blockSize)] * blockSize + (j % blockSize);
          return pool.subarray(slot * rowWidth, (slot + 1) * rowWidth);
        }),
      );
      return { tokens: new Array<number>(queryLen).fill(0), startPos: len - queryLen, blockTables: [blockTable] };
    });
    const batch = describeBatch(chunks, blockSize);
    const qLatent = random.floats(batch.numTokens * numHeads * latentDim, 2);
    const q = random.floats(batch.numTokens * numHeads * headWidth, 2);
    const out = new Float32Array(batch.numTokens * numHeads * latentDim).fill(NaN);
    mlaAttention(qLatent, q, float32Pool(pool, 1, rowWidth), blockSize, batch, mla, out);
    for (let s = 0; s < seqs.length; s++) {
      for (let t = batch.queryStartLoc[s]; t < batch.queryStartLoc[s + 1]; t++) {
        for (let h = 0; h < numHeads; h++) {
          const qRope = q.subarray((t * numHeads + h) * headWidth + nopeDim, (t * numHeads + h + 1) * headWidth);
          const expected = naiveMla(qLatent.subarray(t * numHeads * latentDim), qRope, batch.positions[t], contexts[s], mla, h);
          assertClose(out.subarray((t * numHeads + h) * latentDim, (t * numHeads + h + 1) * latentDim), expected, 1e-5, `trial ${trial} token ${t} head ${h}`);
        }
      }
    }
  }
});

test('mlaAttention with a selection attends to exactly the selected positions (DeepSeek sparse attention)', () => {
  for (let trial = 0; trial < 20; trial++) {
    const mla = randomMla();
    const { numHeads, latentDim, ropeDim, nopeDim } = mla;
    const rowWidth = latentDim + ropeDim;
    const headWidth = nopeDim + ropeDim;
    const blockSize = random.pick([1, 4, 16]);
    const topK = random.int(1, 6);
    const lens = Array.from({ length: random.int(1, 3) }, () => random.int(1, 30));
    const numBlocks = lens.reduce((n, len) => n + Math.ceil(len / blockSize), 0);
    const free = random.shuffled(Array.from({ length: numBlocks }, (_, i) => i));
    const pool = random.floats(numBlocks * blockSize * rowWidth);
    const tables = lens.map((len) => free.splice(0, Math.ceil(len / blockSize)));
    const chunks = lens.map((len, s) => {
      const queryLen = random.int(1, len);
      return { tokens: new Array<number>(queryLen).fill(0), startPos: len - queryLen, blockTables: [tables[s]] };
    });
    const batch = describeBatch(chunks, blockSize);
    // Each token: up to topK distinct visible positions in increasing order, padded with -1.
    const selection = new Int32Array(batch.numTokens * topK).fill(-1);
    const chosen: number[][] = [];
    for (let t = 0; t < batch.numTokens; t++) {
      const positions = random.shuffled(Array.from({ length: batch.positions[t] + 1 }, (_, j) => j)).slice(0, topK).sort((a, b) => a - b);
      selection.set(positions, t * topK);
      chosen.push(positions);
    }
    const qLatent = random.floats(batch.numTokens * numHeads * latentDim, 2);
    const q = random.floats(batch.numTokens * numHeads * headWidth, 2);
    const out = new Float32Array(batch.numTokens * numHeads * latentDim).fill(NaN);
    mlaAttention(qLatent, q, float32Pool(pool, 1, rowWidth), blockSize, batch, mla, out, selection);
    for (let s = 0; s < lens.length; s++) {
      for (let t = batch.queryStartLoc[s]; t < batch.queryStartLoc[s + 1]; t++) {
        const rows = chosen[t].map((j) => {
          const slot = tables[s][Math.floor(j / blockSize)] * blockSize + (j % blockSize);
          return pool.subarray(slot * rowWidth, (slot + 1) * rowWidth);
        });
        for (let h = 0; h < numHeads; h++) {
          const qRope = q.subarray((t * numHeads + h) * headWidth + nopeDim, (t * numHeads + h + 1) * headWidth);
          const expected = naiveMla(qLatent.subarray(t * numHeads * latentDim), qRope, rows.length - 1, rows, mla, h);
          assertClose(out.subarray((t * numHeads + h) * latentDim, (t * numHeads + h + 1) * latentDim), expected, 1e-5, `trial ${trial} token ${t} head ${h}`);
        }
      }
    }
  }
});

test('mlaAttention rejects a selected position the token cannot see', () => {
  const mla: MlaParams = { numHeads: 1, latentDim: 2, ropeDim: 2, nopeDim: 2, scale: 1 };
  const batch = describeBatch([{ tokens: [0, 0], startPos: 0, blockTables: [[0]] }], 4);
  const run = () => mlaAttention(new Float32Array(4), new Float32Array(8), float32Pool(new Float32Array(16), 1, 4), 4, batch, mla, new Float32Array(4), Int32Array.of(0, 1, 1, -1));
  assert.throws(run, /token 0 at position 0 selects position 1/);
});
