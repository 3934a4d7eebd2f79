import { test } from 'node:test';
import assert from 'node:assert/strict';
import { quantizeRowsE4m3, w8a8Matmul } from './fp8-activations.ts';
import { TestRandom, testSeed } from '../../../../test/helpers/cpu-random.ts';
import { quantizeRoundToNearest } from '../../../tensor/quantize-rtn.ts';
import { dequantizeWeight, fp8E4m3Values } from '../../../tensor/quantized-weight.ts';

const random = new TestRandom(testSeed('fp8-activations'));
const E4M3 = fp8E4m3Values();

test('each row is scaled by its own max|x| / 448: the largest value becomes ±448 and every value is within half an e4m3 step', () => {
  const rows = 7;
  const cols = 96;
  const x = random.floats(rows * cols, 3);
  x.fill(0, 2 * cols, 3 * cols); // a row of zeros keeps scale 1 and codes 0
  x[5 * cols + 17] = -250; // one outlier sets its row's scale alone
  const { codes, scales } = quantizeRowsE4m3(x, rows, cols);
  for (let r = 0; r < rows; r++) {
    const row = x.subarray(r * cols, (r + 1) * cols);
    const amax = Math.max(...Array.from(row, Math.abs));
    assert.equal(scales[r], amax === 0 ? 1 : Math.fround(amax / 448), `row ${r}'s scale`);
    for (let k = 0; k < cols; k++) {
      const back = E4M3[codes[r * cols + k]] * scales[r];
      if (Math.abs(row[k]) === amax && amax > 0) assert.equal(Math.abs(E4M3[codes[r * cols + k]]), 448, `row ${r}'s largest value`);
      // e4m3 keeps 3 mantissa bits: a normal value is off by at most 2^-4 of itself; subnormals by 2^-10 · scale.
      assert.ok(Math.abs(back - row[k]) <= Math.max(Math.abs(row[k]) / 16, scales[r] * 2 ** -10) * 1.0001, `row ${r} col ${k}: ${row[k]} came back as ${back}`);
    }
  }
  assert.ok(codes.subarray(2 * cols, 3 * cols).every((c) => c === 0), 'a row of zeros codes to 0');
});

test('the W8A8 product is the dequantized activation codes times the dequantized weight, and close to the weight-only product', () => {
  for (let trial = 0; trial < 6; trial++) {
    const rows = random.int(1, 9);
    const cols = 16 * random.int(1, 12);
    const outRows = random.int(1, 40);
    const w = quantizeRoundToNearest(random.floats(outRows * cols, 0.05), outRows, cols, 'fp8');
    const x = random.floats(rows * cols, 2);
    const bias = trial % 2 === 0 ? random.floats(outRows, 1) : null;
    const out = new Float32Array(rows * outRows);
    w8a8Matmul(x, rows, w, bias, out);
    const dense = dequantizeWeight(w);
    const { codes, scales } = quantizeRowsE4m3(x, rows, cols);
    for (let r = 0; r < rows; r++) {
      for (let o = 0; o < outRows; o++) {
        let quantized = 0;
        let exact = 0;
        // Each activation is off by at most half an e4m3 step: 2^-4 of itself, or 2^-10 of the scale below the normals.
        let bound = 0;
        for (let k = 0; k < cols; k++) {
          const v = x[r * cols + k];
          quantized += E4M3[codes[r * cols + k]] * scales[r] * dense[o * cols + k];
          exact += v * dense[o * cols + k];
          bound += Math.max(Math.abs(v) / 16, scales[r] * 2 ** -10) * Math.abs(dense[o * cols + k]);
        }
        const b = bias === null ? 0 : bias[o];
        const got = out[r * outRows + o];
        assert.ok(Math.abs(got - (quantized + b)) <= 1e-5 * (Math.abs(quantized) + 1), `[${r}, ${o}]: ${got} against ${quantized + b}`);
        assert.ok(Math.abs(got - (exact + b)) <= bound * 1.0001 + 1e-5 * (Math.abs(exact) + 1), `[${r}, ${o}]: ${got} is further than ${bound} from the weight-only ${exact + b}`);
      }
    }
  }
});

test('W8A8 refuses weights it does not define: block-scaled fp8 and other formats', () => {
  const out = new Float32Array(16);
  const x = random.floats(32, 1);
  const blocks = quantizeRoundToNearest(random.floats(16 * 32, 0.05), 16, 32, 'fp8');
  blocks.groupSize = 16;
  assert.throws(() => w8a8Matmul(x, 1, blocks, null, out), /fp8 with one scale per row/);
  assert.throws(() => w8a8Matmul(x, 1, quantizeRoundToNearest(random.floats(16 * 32, 0.05), 16, 32, 'int8'), null, out), /fp8 with one scale per row/);
});
