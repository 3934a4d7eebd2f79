import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TestRandom, testSeed } from '../../test/helpers/cpu-random.ts';
import { checkMxfp4, decodeMxfp4, dequantizeMxfp4, e8m0Value, FP4_E2M1_VALUES, fp4Code, gatherMxfp4Rows, MXFP4_MAX_SCALE_CODE, quantizeMxfp4, type Mxfp4Weight } from './mxfp4.ts';

const random = new TestRandom(testSeed('mxfp4'));

test('E2M1 codes decode by their bits: sign, 2 exponent bits with bias 1 (0 subnormal), 1 mantissa bit', () => {
  for (let code = 0; code < 16; code++) {
    const [sign, exponent, mantissa] = [code >> 3, (code >> 1) & 3, code & 1];
    const magnitude = exponent === 0 ? mantissa * 0.5 : 2 ** (exponent - 1) * (1 + mantissa / 2);
    assert.equal(Math.abs(FP4_E2M1_VALUES[code]), magnitude, `code ${code}`);
    assert.equal(Object.is(FP4_E2M1_VALUES[code], -0) || FP4_E2M1_VALUES[code] < 0, sign === 1, `code ${code} sign`);
  }
  assert.equal(e8m0Value(127), 1);
  assert.equal(e8m0Value(0), 2 ** -127);
  assert.equal(e8m0Value(130), 8);
  assert.ok(Number.isNaN(e8m0Value(255)));
});

test('fp4Code rounds to the nearest E2M1 value, ties to the even code, and saturates at 6', () => {
  const cases: [number, number][] = [
    [0, 0], [0.2, 0], [0.25, 0], [0.26, 1], [0.75, 2], [1.25, 2], [1.3, 3], [1.75, 4], [2.5, 4], [2.6, 5], [3.5, 6], [5, 6], [5.1, 7], [6, 7], [100, 7],
    [-0.75, 10], [-5.1, 15], [-0.1, 0], [NaN, 0],
  ];
  for (const [v, code] of cases) assert.equal(fp4Code(v), code, `fp4Code(${v})`);
  for (let code = 0; code < 16; code++) if (code !== 8) assert.equal(fp4Code(FP4_E2M1_VALUES[code]), code, `value of code ${code}`);
});

test('quantizeMxfp4 takes the OCP shared exponent floor(log2 max) - 2 per block of 32 and stores codes two a byte, the even column low', () => {
  const values = new Float32Array(64);
  values[0] = 1.5; // block 0: max 6 * 2^-2 -> exponent floor(log2 1.5) - 2 = -2
  values[1] = -0.25;
  values[31] = 0.375;
  values[32] = 100; // block 1: exponent floor(log2 100) - 2 = 4; 100 / 16 = 6.25 saturates to 6
  values[33] = 24;
  const w = quantizeMxfp4(values, [2, 32]);
  assert.deepEqual([...w.scales], [125, 131]);
  assert.equal(w.blocks[0], fp4Code(6) | (fp4Code(-1) << 4));
  assert.equal(w.blocks[15] >> 4, fp4Code(1.5));
  assert.equal(w.blocks[16], fp4Code(6) | (fp4Code(1.5) << 4));
  const back = dequantizeMxfp4(w);
  assert.deepEqual([back[0], back[1], back[31], back[32], back[33]], [1.5, -0.25, 0.375, 96, 24]);
  assert.ok(back.slice(2, 31).every((v) => v === 0));
});

test('random weights round-trip within half an E2M1 step of their block, and decoding a range equals decoding it all', () => {
  const [rows, cols] = [6, 96];
  const values = random.floats(rows * cols, 0.3);
  const w = quantizeMxfp4(values, [rows, cols]);
  checkMxfp4(w, 'w');
  const back = dequantizeMxfp4(w);
  for (let block = 0; block < (rows * cols) / 32; block++) {
    const scale = e8m0Value(w.scales[block]);
    for (let i = block * 32; i < (block + 1) * 32; i++) {
      // Steps are at most 2 · scale (between 4 and 6); values past 6 · scale saturate, at most 8 · scale.
      assert.ok(Math.abs(back[i] - values[i]) <= Math.max(scale, Math.abs(values[i]) - 6 * scale) + 1e-12, `[${i}] ${values[i]} -> ${back[i]}`);
    }
  }
  const part = new Float32Array(64);
  decodeMxfp4(w, 128, 64, part);
  assert.deepEqual(part, back.slice(128, 192));
});

test('gatherMxfp4Rows moves whole rows of bytes and scales between matrices', () => {
  const values = random.floats(3 * 4 * 64, 1);
  const w = quantizeMxfp4(values, [3, 4, 64]);
  const picked = gatherMxfp4Rows(w, [2, 0], [3, 1]);
  assert.deepEqual(picked.shape, [2, 2, 64]);
  const all = dequantizeMxfp4(w);
  const expected = [[2, 3], [2, 1], [0, 3], [0, 1]].flatMap(([m, r]) => [...all.slice((m * 4 + r) * 64, (m * 4 + r + 1) * 64)]);
  assert.deepEqual([...dequantizeMxfp4(picked)], expected);
});

test('gatherMxfp4Rows takes a range of whole 32-value blocks of columns, and names a range that splits a block', () => {
  const values = random.floats(2 * 3 * 96, 1);
  const w = quantizeMxfp4(values, [2, 3, 96]);
  const picked = gatherMxfp4Rows(w, [1], [2, 0], { start: 32, count: 64 });
  assert.deepEqual(picked.shape, [1, 2, 64]);
  const all = dequantizeMxfp4(w);
  const expected = [2, 0].flatMap((r) => [...all.slice((3 + r) * 96 + 32, (3 + r) * 96 + 96)]);
  assert.deepEqual([...dequantizeMxfp4(picked)], expected);
  assert.throws(() => gatherMxfp4Rows(w, [0], [0], { start: 16, count: 32 }), /columns 16\.\.47 of 96 do not fall on its 32-value blocks/);
});

test('checkMxfp4 names a shape the bytes do not fill, rows of partial blocks, and scales Keel does not take', () => {
  const w = quantizeMxfp4(random.floats(64, 1), [2, 32]);
  assert.throws(() => checkMxfp4({ ...w, shape: [4, 32] }, 'experts'), /experts: 32 MXFP4 bytes and 2 scales do not fill \[4, 32\]/);
  assert.throws(() => checkMxfp4({ ...w, shape: [4, 16] }, 'experts'), /MXFP4 rows of 16 values are not whole blocks of 32/);
  const nan: Mxfp4Weight = { ...w, scales: Uint8Array.of(127, 255) };
  assert.throws(() => checkMxfp4(nan, 'experts'), /block 1 has scale code 255 \(NaN\)/);
  const huge: Mxfp4Weight = { ...w, scales: Uint8Array.of(MXFP4_MAX_SCALE_CODE + 1, 127) };
  assert.throws(() => checkMxfp4(huge, 'experts'), /block 0 has scale code 241 \(2\^114\); Keel takes codes up to 240/);
});
