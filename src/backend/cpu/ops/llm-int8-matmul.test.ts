import { test } from 'node:test';
import assert from 'node:assert/strict';
import { llmInt8Matmul, quantizeActivationsInt8 } from './llm-int8-matmul.ts';
import { quantizedMatmul } from './quantized-matmul.ts';
import { TestRandom, testSeed } from '../../../../test/helpers/cpu-random.ts';
import { quantizeRoundToNearest } from '../../../tensor/quantize-rtn.ts';
import { dequantizeWeight, type QuantizedWeight } from '../../../tensor/quantized-weight.ts';

const random = new TestRandom(testSeed('llm-int8-matmul'));

/** bitsandbytes' steps written out on whole matrices: zero the outliers, quantize rows, zero outlier columns, int8 product, add the 16-bit outlier product. */
function naive(x: Float32Array, rows: number, w: QuantizedWeight, threshold: number): Float32Array {
  const { cols } = w;
  const dense = dequantizeWeight(w);
  const cb = Array.from(w.codes, (c) => c - 128);
  const columns = new Set<number>();
  for (let i = 0; i < x.length; i++) if (threshold > 0 && Math.abs(x[i]) >= threshold) columns.add(i % cols);
  const out = new Float32Array(rows * w.rows);
  for (let r = 0; r < rows; r++) {
    const zeroed = Array.from(x.subarray(r * cols, (r + 1) * cols), (v) => (threshold > 0 && Math.abs(v) >= threshold ? 0 : v));
    const absmax = Math.max(...zeroed.map(Math.abs));
    const inverse = Math.fround(127 / absmax);
    const q = zeroed.map((v, k) => (columns.has(k) || absmax === 0 ? 0 : roundEven(Math.fround(v * inverse))));
    for (let o = 0; o < w.rows; o++) {
      let acc = 0;
      for (let k = 0; k < cols; k++) acc += q[k] * cb[o * cols + k];
      let sum = acc * Math.fround(absmax / 127) * w.scales[o];
      for (const k of [...columns].sort((a, b) => a - b)) sum += x[r * cols + k] * dense[o * cols + k];
      out[r * w.rows + o] = sum;
    }
  }
  return out;
}

function roundEven(v: number): number {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

function randomCase(rows: number, cols: number, outRows: number, outliers: number) {
  const w = quantizeRoundToNearest(random.floats(outRows * cols, 0.1), outRows, cols, 'llm-int8');
  const x = random.floats(rows * cols, 1);
  // A few large activations, in a few columns, so that some rows of an outlier column are small.
  for (let i = 0; i < outliers; i++) x[random.int(0, rows - 1) * cols + random.int(0, cols - 1)] = random.pick([-1, 1]) * random.uniform(6, 40);
  return { w, x };
}

test('LLM.int8() equals bitsandbytes\' steps written out: outlier columns, row-wise int8 activations, 16-bit outlier product', () => {
  for (let trial = 0; trial < 40; trial++) {
    const rows = random.int(1, 9);
    const cols = random.int(1, 90);
    const { w, x } = randomCase(rows, cols, random.int(1, 20), random.int(0, 4));
    const threshold = random.pick([0, 6, 6, 2.5]);
    w.mixedInt8 = { threshold };
    const bias = random.int(0, 1) === 1 ? random.floats(w.rows) : null;
    const out = new Float32Array(rows * w.rows);
    llmInt8Matmul(x, rows, w, bias, out);
    const expected = naive(x, rows, w, threshold);
    for (let i = 0; i < out.length; i++) {
      const want = expected[i] + (bias === null ? 0 : bias[i % w.rows]);
      assert.ok(Math.abs(out[i] - want) <= 1e-5 * (1 + Math.abs(want)), `trial ${trial} output ${i}: ${out[i]} vs ${want}`);
    }
  }
});

test('outlier columns keep large activations out of the int8 scale: far closer to the dense product than plain int8', () => {
  const { w, x } = randomCase(4, 64, 16, 3);
  const dense = new Float32Array(4 * 16);
  quantizedMatmul(x, 4, w, null, dense);
  const error = (threshold: number) => {
    const out = new Float32Array(4 * 16);
    llmInt8Matmul(x, 4, { ...w, mixedInt8: { threshold } }, null, out);
    return Math.max(...out.map((v, i) => Math.abs(v - dense[i])));
  };
  const { outliers } = quantizeActivationsInt8(x, 4, 64, 6);
  assert.ok(outliers.length > 0, 'the case has outlier columns');
  assert.ok(error(6) * 4 < error(0), `with outlier columns ${error(6)}, all int8 ${error(0)}`);
});

test('rows of zeros quantize to zeros, and a threshold of 0 leaves no outlier column', () => {
  const x = new Float32Array([0, 0, 0, 0, 1, -50, 2, 3]);
  const q = quantizeActivationsInt8(x, 2, 4, 0);
  assert.deepEqual(q.outliers, []);
  assert.deepEqual([...q.codes], [0, 0, 0, 0, 3, -127, 5, 8]);
  assert.deepEqual([...q.rowScales], [0, Math.fround(50 / 127)]);
  const mixed = quantizeActivationsInt8(x, 2, 4, 6);
  assert.deepEqual(mixed.outliers, [1]);
  assert.deepEqual([...mixed.codes], [0, 0, 0, 0, 42, 0, 85, 127]);
});
