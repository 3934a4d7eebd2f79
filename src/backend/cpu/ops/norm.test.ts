import { test } from 'node:test';
import assert from 'node:assert/strict';
import { addRmsNorm, headRmsNorm, rmsNorm } from './norm.ts';
import { TestRandom, testSeed } from '../../../../test/helpers/cpu-random.ts';

const random = new TestRandom(testSeed('norm'));

function naiveRmsNorm(row: ArrayLike<number>, weight: ArrayLike<number>, eps: number): number[] {
  const values = Array.from(row);
  const meanSquare = values.reduce((s, v) => s + v * v, 0) / values.length;
  return values.map((v, i) => (v / Math.sqrt(meanSquare + eps)) * weight[i]);
}

function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string): void {
  assert.equal(actual.length, expected.length, what);
  for (let i = 0; i < actual.length; i++) {
    const tolerance = 1e-6 * Math.max(1, Math.abs(expected[i]));
    assert.ok(Math.abs(actual[i] - expected[i]) <= tolerance, `${what}[${i}]: ${actual[i]} vs ${expected[i]}`);
  }
}

test('rmsNorm normalizes each row and scales by the weight', () => {
  for (let i = 0; i < 20; i++) {
    const rows = random.int(1, 6);
    const dim = random.int(1, 130);
    const eps = random.pick([1e-5, 1e-6]);
    const x = random.floats(rows * dim, random.pick([1e-3, 1, 50]));
    const weight = random.floats(dim);
    const out = new Float32Array(rows * dim);
    rmsNorm(x, rows, dim, weight, eps, out);
    for (let r = 0; r < rows; r++) {
      assertClose(out.subarray(r * dim, (r + 1) * dim), naiveRmsNorm(x.subarray(r * dim, (r + 1) * dim), weight, eps), `row ${r} of ${rows}x${dim}`);
    }
  }
});

test('rmsNorm of an all-zero row is zero, not NaN (eps guards the division)', () => {
  const out = new Float32Array(4);
  rmsNorm(new Float32Array(4), 1, 4, Float32Array.of(1, 2, 3, 4), 1e-6, out);
  assert.deepEqual(out, new Float32Array(4));
});

test('addRmsNorm adds x into the residual in place and normalizes the sum', () => {
  const rows = 3, dim = 40, eps = 1e-6;
  const x = random.floats(rows * dim);
  const residual = random.floats(rows * dim);
  const expectedSum = new Float32Array(rows * dim).map((_, i) => residual[i] + x[i]);
  const weight = random.floats(dim);
  const out = new Float32Array(rows * dim);
  addRmsNorm(x, residual, rows, dim, weight, eps, out);
  assert.deepEqual(residual, expectedSum);
  for (let r = 0; r < rows; r++) {
    assertClose(out.subarray(r * dim, (r + 1) * dim), naiveRmsNorm(expectedSum.subarray(r * dim, (r + 1) * dim), weight, eps), `row ${r}`);
  }
});

test('headRmsNorm normalizes only the chosen heads of each packed row', () => {
  const rows = 3, headDim = 8, totalHeads = 7, firstHead = 2, numHeads = 3, eps = 1e-6;
  const width = totalHeads * headDim;
  const data = random.floats(rows * width);
  const before = data.slice();
  const weight = random.floats(headDim);
  headRmsNorm(data, rows, width, firstHead, numHeads, headDim, weight, eps);
  for (let r = 0; r < rows; r++) {
    for (let h = 0; h < totalHeads; h++) {
      const at = r * width + h * headDim;
      const head = data.subarray(at, at + headDim);
      const original = before.subarray(at, at + headDim);
      if (h >= firstHead && h < firstHead + numHeads) assertClose(head, naiveRmsNorm(original, weight, eps), `row ${r} head ${h}`);
      else assert.deepEqual(head, original, `row ${r} head ${h} must be untouched`);
    }
  }
});
