import { test } from 'node:test';
import assert from 'node:assert/strict';
import { quantizedMatmul } from './quantized-matmul.ts';
import { CpuBackend } from '../cpu-backend.ts';
import { CpuTensor } from '../cpu-tensor.ts';
import { TestRandom, testSeed } from '../../../../test/helpers/cpu-random.ts';
import { referenceMatmul } from '../../../../test/helpers/reference-matmul.ts';
import {
  codeTable,
  dequantizeWeight,
  hasZeroPoint,
  emptyQuantizedWeight,
  fillInt4Padding,
  floatToFp8E4m3,
  fp8E4m3Values,
  getCode,
  maxCode,
  putCode,
  symmetricZero,
  type QuantizedFormat,
  type QuantizedWeight,
} from '../../../tensor/quantized-weight.ts';

const random = new TestRandom(testSeed('quantized-matmul'));

interface Case {
  format: QuantizedFormat;
  rows: number;
  cols: number;
  /** -1: one group per row. */
  group: number;
  asymmetric: boolean;
  actOrder: boolean;
}

/** A random weight, with its codes, zeros and permutation also kept unpacked for the naive reference. */
function randomWeight(c: Case): { w: QuantizedWeight; codes: number[][]; zeros: number[][]; scales: number[][] } {
  const groupSize = c.group === -1 ? c.cols : c.group;
  const w = emptyQuantizedWeight(c.format, c.rows, c.cols, groupSize, c.asymmetric);
  const groups = Math.ceil(c.cols / groupSize);
  const fp8 = fp8E4m3Values();
  const codes = Array.from({ length: c.rows }, () =>
    Array.from({ length: c.cols }, () => {
      if (c.format !== 'fp8-e4m3') return random.int(0, maxCode(c.format));
      let code;
      do code = random.int(0, 255);
      while (Number.isNaN(fp8[code]));
      return code;
    }),
  );
  const zeros = Array.from({ length: c.rows }, () =>
    Array.from({ length: groups }, () => (c.asymmetric ? random.int(0, maxCode(c.format)) : hasZeroPoint(c.format) ? symmetricZero(c.format) : 0)),
  );
  const scales = Array.from({ length: c.rows }, () => Array.from({ length: groups }, () => Math.fround(random.uniform(0.001, 0.1))));
  for (let r = 0; r < c.rows; r++) {
    for (let k = 0; k < c.cols; k++) putCode(w, r, k, codes[r][k]);
    for (let g = 0; g < groups; g++) {
      w.scales[r * groups + g] = scales[r][g];
      if (w.zeros) w.zeros[r * groups + g] = zeros[r][g];
    }
  }
  fillInt4Padding(w);
  if (c.actOrder) {
    const perm = Int32Array.from({ length: c.cols }, (_, i) => i);
    for (let i = c.cols - 1; i > 0; i--) {
      const j = random.int(0, i);
      [perm[i], perm[j]] = [perm[j], perm[i]];
    }
    w.perm = perm;
  }
  return { w, codes, zeros, scales };
}

/** The dequantized weight in input column order, by the formula of the layout, from the unpacked values. */
function naiveDequantize(c: Case, codes: number[][], zeros: number[][], scales: number[][], perm: Int32Array | null): Float32Array {
  const groupSize = c.group === -1 ? c.cols : c.group;
  const out = new Float32Array(c.rows * c.cols);
  const fp8 = fp8E4m3Values();
  for (let r = 0; r < c.rows; r++) {
    for (let k = 0; k < c.cols; k++) {
      const g = Math.floor(k / groupSize);
      const value =
        c.format === 'fp8-e4m3' ? fp8[codes[r][k]] : c.format === 'nf4' || c.format === 'fp4' ? codeTable(c.format)[codes[r][k]] : codes[r][k] - zeros[r][g];
      out[r * c.cols + (perm === null ? k : perm[k])] = Math.fround(value * scales[r][g]);
    }
  }
  return out;
}

function check(c: Case, xRows: number, withBias: boolean): void {
  const what = JSON.stringify({ ...c, xRows, withBias });
  const { w, codes, zeros, scales } = randomWeight(c);
  for (let r = 0; r < c.rows; r++) for (let k = 0; k < c.cols; k++) assert.equal(getCode(w, r, k), codes[r][k], `${what}: code (${r}, ${k})`);
  const dense = naiveDequantize(c, codes, zeros, scales, w.perm);
  assert.deepEqual(dequantizeWeight(w), dense, `${what}: dequantizeWeight`);
  const x = random.floats(xRows * c.cols);
  const bias = withBias ? random.floats(c.rows) : null;
  const out = new Float32Array(xRows * c.rows).fill(NaN);
  quantizedMatmul(x, xRows, w, bias, out);
  const expected = referenceMatmul(x, xRows, dense, c.rows, c.cols, bias);
  if (!c.actOrder) {
    assert.deepEqual(out, expected, `${what}: bit-identical to dequantize-then-matmul`);
    return;
  }
  // Act-order sums the same products in the stored order: equal up to float64 rounding.
  for (let i = 0; i < out.length; i++) assert.ok(Math.abs(out[i] - expected[i]) <= 1e-6 * (1 + Math.abs(expected[i])), `${what}: output ${i}: ${out[i]} vs ${expected[i]}`);
}

const FORMATS: QuantizedFormat[] = ['int4', 'int8', 'fp8-e4m3', 'nf4', 'fp4'];

test('every format equals dequantize-then-matmul on edge shapes: ragged rows and columns, K not a multiple of the group, per-channel groups', () => {
  for (const format of FORMATS) {
    for (const [rows, cols, group] of [[1, 1, -1], [3, 7, -1], [5, 9, 4], [13, 33, 8], [9, 130, 128], [8, 64, 32], [7, 100, 32], [17, 40, 40]]) {
      for (const asymmetric of hasZeroPoint(format) ? [false, true] : [false]) {
        for (const actOrder of [false, true]) {
          for (const xRows of [1, 4, 6]) check({ format, rows, cols, group, asymmetric, actOrder }, xRows, xRows === 6);
        }
      }
    }
  }
});

test('every format equals dequantize-then-matmul on random shapes', () => {
  for (let i = 0; i < 60; i++) {
    const format = random.pick(FORMATS);
    const cols = random.int(1, 150);
    const group = random.pick([-1, random.int(1, cols)]);
    const c = { format, rows: random.int(1, 20), cols, group, asymmetric: hasZeroPoint(format) && random.int(0, 1) === 1, actOrder: random.int(0, 1) === 1 };
    check(c, random.int(1, 9), random.int(0, 1) === 1);
  }
});

test('int4 words hold columns 0, 2, 4, 6, 1, 3, 5, 7 in nibbles 0..7, padding columns at their zero', () => {
  const w = emptyQuantizedWeight('int4', 1, 10, 10, true);
  w.zeros![0] = 5;
  for (let k = 0; k < 10; k++) putCode(w, 0, k, k);
  fillInt4Padding(w);
  const words = new Uint32Array(w.codes.buffer);
  assert.equal(words[0].toString(16), '75316420');
  // Columns 8 and 9, then six padding columns at zero code 5.
  assert.equal(words[1].toString(16), '55595558');
});

test('the CPU backend multiplies by a quantized weight in linear and gatedLinear', () => {
  const b = new CpuBackend();
  const c: Case = { format: 'int4', rows: 12, cols: 20, group: 8, asymmetric: true, actOrder: false };
  const { w } = randomWeight(c);
  const dense = new CpuTensor([12, 20], dequantizeWeight(w));
  const quantized = b.loadQuantizedWeight(w);
  const x = new CpuTensor([3, 20], random.floats(60));
  assert.deepEqual(b.toHost(b.linear(x, quantized, null)), b.toHost(b.linear(x, dense, null)));
  const act = { kind: 'silu' } as const;
  assert.deepEqual(b.toHost(b.gatedLinear(x, quantized, act)), b.toHost(b.gatedLinear(x, dense, act)));
  assert.throws(() => b.rmsNorm(x, quantized, 1e-5), /quantized weight \(int4\)/);
});

test('floatToFp8E4m3 maps every code to itself, midpoints to the even neighbour, and saturates at 448', () => {
  const values = fp8E4m3Values();
  for (let code = 0; code < 256; code++) {
    if (Number.isNaN(values[code]) || (code & 0x7f) === 0) continue;
    assert.equal(floatToFp8E4m3(values[code]), code, `code ${code}`);
  }
  for (let code = 0; code < 0x7e; code++) {
    const mid = (values[code] + values[code + 1]) / 2;
    assert.equal(floatToFp8E4m3(mid), code % 2 === 0 ? code : code + 1, `midpoint above ${code}`);
    assert.equal(floatToFp8E4m3(-mid), 0x80 | (code % 2 === 0 ? code : code + 1), `negative midpoint above ${code}`);
  }
  assert.equal(floatToFp8E4m3(1e6), 0x7e);
  assert.equal(floatToFp8E4m3(-500), 0xfe);
  for (let i = 0; i < 2000; i++) {
    const v = random.uniform(-460, 460) * 2 ** -random.int(0, 14);
    const code = floatToFp8E4m3(v);
    const nearest = Math.abs(Math.min(Math.abs(v), 448));
    const best = Math.min(...Array.from({ length: 0x7f }, (_, c) => Math.abs(values[c] - nearest)));
    assert.equal(Math.abs(Math.abs(values[code]) - nearest), best, `value ${v} -> code ${code}`);
  }
});
