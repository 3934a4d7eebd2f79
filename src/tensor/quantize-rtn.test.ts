import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TestRandom, testSeed } from '../../test/helpers/cpu-random.ts';
import { INT4_GROUP_SIZE, quantizeRoundToNearest } from './quantize-rtn.ts';
import { dequantizeWeight, fp8E4m3Values, getCode, numGroups, zeroOf } from './quantized-weight.ts';

const random = new TestRandom(testSeed('quantize-rtn'));

/** Largest |w - dequantized(w)| over row `row`, group `group`. */
function worstError(values: Float32Array, dense: Float32Array, cols: number, row: number, start: number, end: number): number {
  let worst = 0;
  for (let c = start; c < end; c++) worst = Math.max(worst, Math.abs(values[row * cols + c] - dense[row * cols + c]));
  return worst;
}

test('int8 and int4 round every value to within half a step of its scale, int4 in groups of 128 with zero points', () => {
  for (const method of ['int8', 'int4'] as const) {
    for (const [rows, cols] of [[3, 300], [7, 128], [2, 5], [4, 1000]]) {
      const values = random.floats(rows * cols, random.uniform(0.01, 3));
      const w = quantizeRoundToNearest(values, rows, cols, method);
      const dense = dequantizeWeight(w);
      const groupSize = method === 'int4' ? Math.min(INT4_GROUP_SIZE, cols) : cols;
      assert.equal(w.groupSize, groupSize);
      assert.equal(w.zeros !== null, method === 'int4');
      for (let r = 0; r < rows; r++) {
        for (let g = 0; g < numGroups(w); g++) {
          const scale = w.scales[r * numGroups(w) + g];
          const err = worstError(values, dense, cols, r, g * groupSize, Math.min(cols, (g + 1) * groupSize));
          assert.ok(err <= scale * (0.5 + 1e-6), `${method} [${rows}, ${cols}] row ${r} group ${g}: error ${err} > half of scale ${scale}`);
        }
      }
    }
  }
});

test('fp8 scales each row so its largest value maps to 448, with e4m3 relative precision', () => {
  const rows = 5;
  const cols = 77;
  const values = random.floats(rows * cols, 2);
  const w = quantizeRoundToNearest(values, rows, cols, 'fp8');
  const dense = dequantizeWeight(w);
  const fp8 = fp8E4m3Values();
  for (let r = 0; r < rows; r++) {
    const max = Math.max(...Array.from(values.subarray(r * cols, (r + 1) * cols), Math.abs));
    assert.ok(Math.abs(w.scales[r] * 448 - max) <= 1e-6 * max, `row ${r} scale`);
    for (let c = 0; c < cols; c++) {
      const v = values[r * cols + c];
      // e4m3 has 3 mantissa bits: a normal value rounds within 2^-4 of itself; subnormals within half of 2^-9 * scale.
      assert.ok(Math.abs(dense[r * cols + c] - v) <= Math.max(Math.abs(v) / 16, w.scales[r] * 2 ** -10) * (1 + 1e-6), `row ${r} col ${c}: ${v} -> ${dense[r * cols + c]}`);
      assert.ok(!Number.isNaN(fp8[getCode(w, r, c)]));
    }
  }
});

test('rows and groups of zeros quantize to exact zeros; zero stays exactly representable in int4 groups', () => {
  const values = new Float32Array(2 * 256);
  values.fill(0.5, 256 + 128);
  values[256 + 130] = -0.25;
  for (const method of ['fp8', 'int8', 'int4'] as const) {
    const dense = dequantizeWeight(quantizeRoundToNearest(values, 2, 256, method));
    assert.deepEqual(dense.subarray(0, 256 + 128), new Float32Array(256 + 128), `${method}: zero rows and groups`);
  }
  const w = quantizeRoundToNearest(values, 2, 256, 'int4');
  assert.equal(getCode(w, 0, 0), zeroOf(w, 0, 0));
});

test('a weight whose values do not match its shape is refused', () => {
  assert.throws(() => quantizeRoundToNearest(new Float32Array(10), 3, 4, 'int8'), /10 values for \[3, 4\]/);
});
