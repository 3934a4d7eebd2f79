import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TestRandom, testSeed } from '../../test/helpers/cpu-random.ts';
import { quantizeTable4 } from './quantize-rtn.ts';
import { codeTable, getCode } from './quantized-weight.ts';

const random = new TestRandom(testSeed('quantize-table4'));

test('NF4 and FP4 quantization picks the nearest table value of each value over its block absmax, ties to the lower value', () => {
  for (const format of ['nf4', 'fp4'] as const) {
    const table = codeTable(format);
    const rows = 3;
    const cols = 128;
    const values = random.floats(rows * cols, 2);
    const w = quantizeTable4(values, rows, cols, format, 64);
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        const absmax = w.scales[r * 2 + (c >> 6)];
        const scaled = Math.fround(values[r * cols + c] * Math.fround(1 / absmax));
        const got = table[getCode(w, r, c)];
        const best = Math.min(...Array.from(table, (v) => Math.abs(v - scaled)));
        assert.equal(Math.abs(got - scaled), best, `${format} (${r}, ${c}): ${scaled} -> ${got}`);
      }
    }
  }
  // Exactly between NF4's 0 and 0.0796: the lower value.
  const mid = Math.fround((0 + codeTable('nf4')[8]) / 2);
  const w = quantizeTable4(Float32Array.from([1, mid]), 1, 2, 'nf4', 2);
  assert.equal(getCode(w, 0, 1), 7);
});
