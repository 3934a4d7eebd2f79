import { test } from 'node:test';
import assert from 'node:assert/strict';
import { matmulTransposed } from './matmul.ts';
import { TestRandom, testSeed } from '../../../../test/helpers/cpu-random.ts';
import { referenceMatmul } from '../../../../test/helpers/reference-matmul.ts';

const random = new TestRandom(testSeed('matmul'));

function run(rows: number, inDim: number, outDim: number, withBias: boolean): void {
  const x = random.floats(rows * inDim);
  const w = random.floats(outDim * inDim);
  const bias = withBias ? random.floats(outDim) : null;
  const out = new Float32Array(rows * outDim).fill(NaN);
  matmulTransposed(x, rows, inDim, w, outDim, bias, out);
  assert.deepEqual(out, referenceMatmul(x, rows, w, outDim, inDim, bias), `rows ${rows} in ${inDim} out ${outDim} bias ${withBias}`);
}

test('matches the naive float64 dot products exactly over tile-aligned and ragged shapes', () => {
  for (const rows of [1, 2, 3, 4, 5, 8, 9]) {
    for (const [inDim, outDim] of [[1, 1], [7, 3], [16, 4], [33, 13], [64, 8], [5, 17]]) {
      run(rows, inDim, outDim, false);
      run(rows, inDim, outDim, true);
    }
  }
});

test('matches the naive reference on random shapes', () => {
  for (let i = 0; i < 40; i++) run(random.int(1, 12), random.int(1, 70), random.int(1, 40), random.int(0, 1) === 1);
});

test('a row gives the same bits alone as inside a batch (chunked prefill equals one-shot)', () => {
  const rows = 11, inDim = 24, outDim = 10;
  const x = random.floats(rows * inDim);
  const w = random.floats(outDim * inDim);
  const all = new Float32Array(rows * outDim);
  matmulTransposed(x, rows, inDim, w, outDim, null, all);
  for (let r = 0; r < rows; r++) {
    const one = new Float32Array(outDim);
    matmulTransposed(x.subarray(r * inDim, (r + 1) * inDim), 1, inDim, w, outDim, null, one);
    assert.deepEqual(one, all.subarray(r * outDim, (r + 1) * outDim), `row ${r}`);
  }
});
