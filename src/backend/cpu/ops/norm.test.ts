import { test } from 'node:test';
import assert from 'node:assert/strict';
import { addRmsNorm, headRmsNorm, layerNorm, rmsNorm } from './norm.ts';
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

function naiveLayerNorm(group: ArrayLike<number>, weight: ArrayLike<number>, eps: number): number[] {
  const values = Array.from(group);
  const mean = values.reduce((s, v) => s + v, 0) / values.length;
  const variance = values.reduce((s, v) => s + (v - mean) ** 2, 0) / values.length;
  return values.map((v, i) => ((v - mean) / Math.sqrt(variance + eps)) * weight[i]);
}

test('layerNorm normalizes each group of width values of a row with that group\'s own weights, and adds its own biases when given', () => {
  for (let i = 0; i < 20; i++) {
    const rows = random.int(1, 6);
    const width = random.int(1, 40);
    const groups = random.int(1, 5);
    const cols = width * groups;
    const eps = random.pick([1e-5, 1e-6]);
    // An offset far from zero: the mean must come off before the variance is taken.
    const offset = random.pick([0, 30]);
    const x = random.floats(rows * cols, random.pick([1e-3, 1, 50])).map((v) => v + offset);
    const weight = random.floats(cols);
    const bias = random.pick([null, random.floats(cols)]);
    const out = new Float32Array(rows * cols);
    layerNorm(x, rows, cols, width, weight, bias, eps, out);
    for (let r = 0; r < rows; r++) {
      for (let g = 0; g < groups; g++) {
        const [start, end] = [r * cols + g * width, r * cols + (g + 1) * width];
        const expected = naiveLayerNorm(x.subarray(start, end), weight.subarray(g * width, (g + 1) * width), eps).map((v, i) => v + (bias?.[g * width + i] ?? 0));
        assertClose(out.subarray(start, end), expected, `row ${r} group ${g} of ${rows}x${groups}x${width}${bias === null ? '' : ' with bias'}`);
      }
    }
  }
});

test('layerNorm of a constant group is zero, not NaN (eps guards the division)', () => {
  const out = new Float32Array(4);
  layerNorm(Float32Array.of(3, 3, 3, 3), 1, 4, 4, Float32Array.of(1, 2, 3, 4), null, 1e-5, out);
  assert.deepEqual(out, new Float32Array(4));
});
