import assert from 'node:assert/strict';
import { test } from 'node:test';
import { float32ToHostTensor, floatToBf16Bits, floatToF16Bits, hostTensorToFloat32 } from './host-dtype.ts';

function halves(bits: number[]): Uint8Array {
  return new Uint8Array(Uint16Array.from(bits).buffer);
}

test('every finite f16 and bf16 value survives decode then encode bit for bit', () => {
  for (const [dtype, encode, isNaN] of [
    ['f16', floatToF16Bits, (h: number) => (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0],
    ['bf16', floatToBf16Bits, (h: number) => (h & 0x7f80) === 0x7f80 && (h & 0x7f) !== 0],
  ] as const) {
    const all = Array.from({ length: 65536 }, (_, h) => h).filter((h) => !isNaN(h));
    const decoded = hostTensorToFloat32({ dtype, shape: [all.length], data: halves(all) });
    for (let i = 0; i < all.length; i++) {
      assert.equal(encode(decoded[i]), all[i], `${dtype} bits ${all[i].toString(16)}`);
    }
  }
});

test('f16 encoding rounds to nearest even, keeps subnormals and overflows to infinity', () => {
  assert.equal(floatToF16Bits(1), 0x3c00);
  assert.equal(floatToF16Bits(-2), 0xc000);
  assert.equal(floatToF16Bits(65504), 0x7bff);
  assert.equal(floatToF16Bits(65520), 0x7c00); // halfway to the next power of two: ties to even = inf
  assert.equal(floatToF16Bits(1e9), 0x7c00);
  assert.equal(floatToF16Bits(2 ** -24), 0x0001);
  assert.equal(floatToF16Bits(2 ** -25), 0x0000); // halfway between 0 and the smallest subnormal
  assert.equal(floatToF16Bits(1.5 * 2 ** -25), 0x0001);
  assert.equal(floatToF16Bits(1 + 2 ** -11), 0x3c00); // halfway, even neighbour is 1.0
  assert.equal(floatToF16Bits(1 + 3 * 2 ** -11), 0x3c02);
  assert.equal(floatToF16Bits(NaN) & 0x7e00, 0x7e00);
});

test('bf16 encoding rounds to nearest even', () => {
  assert.equal(floatToBf16Bits(1), 0x3f80);
  assert.equal(floatToBf16Bits(1 + 2 ** -8), 0x3f80);
  assert.equal(floatToBf16Bits(1 + 3 * 2 ** -8), 0x3f82);
  assert.equal(floatToBf16Bits(-0.5), 0xbf00);
  assert.ok(Number.isNaN(hostTensorToFloat32(float32ToHostTensor(Float32Array.of(NaN), 'bf16', [1]))[0]));
});

test('float32 tensors round-trip and unaligned byte views decode correctly', () => {
  const values = Float32Array.of(0.25, -3, 1e-8);
  for (const dtype of ['f32', 'f16', 'bf16'] as const) {
    const t = float32ToHostTensor(values, dtype, [3]);
    const shifted = new Uint8Array(t.data.length + 1);
    shifted.set(t.data, 1);
    const unaligned = { ...t, data: shifted.subarray(1) };
    assert.deepEqual(hostTensorToFloat32(unaligned), hostTensorToFloat32(t));
  }
  assert.deepEqual(hostTensorToFloat32(float32ToHostTensor(values, 'f32', [3])), values);
  assert.deepEqual(Array.from(hostTensorToFloat32(float32ToHostTensor(Float32Array.of(0.25, -3), 'f16', [2]))), [0.25, -3]);
});

test('a float32 array encodes to bf16 as floatToBf16Bits encodes each value (random bits, NaNs, infinities, ties)', () => {
  const bits = new Uint32Array(1 << 16);
  let state = 12345;
  for (let i = 0; i < bits.length; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    bits[i] = state;
  }
  bits.set([0x7f800000, 0xff800000, 0x7fc00000, 0xffffffff, 0x7f7fffff, 0xff7fffff, 0x3f808000, 0x3f818000, 0x00008000, 0x80000000], 0);
  const values = new Float32Array(bits.buffer);
  const encoded = new Uint16Array(float32ToHostTensor(values, 'bf16', [values.length]).data.buffer);
  values.forEach((v, i) => assert.equal(encoded[i], floatToBf16Bits(v), `bits 0x${bits[i].toString(16)}`));
});
