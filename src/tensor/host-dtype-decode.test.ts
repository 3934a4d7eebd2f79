import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KeelError } from '../errors.ts';
import { hostTensorToFloat32 } from './host-dtype.ts';

/** Little-endian bytes of 16-bit patterns, starting at `offset` inside a larger buffer (unaligned when odd). */
function halves(bits: number[], offset = 0): Uint8Array {
  const bytes = new Uint8Array(offset + bits.length * 2);
  bits.forEach((b, i) => {
    bytes[offset + 2 * i] = b & 0xff;
    bytes[offset + 2 * i + 1] = b >> 8;
  });
  return bytes.subarray(offset);
}

test('f16 decodes normals, subnormals, signed zero, the largest half, infinities and NaN', () => {
  const cases: [number, number][] = [
    [0x3c00, 1], [0xc000, -2], [0x3555, 0.333251953125], [0x0001, 2 ** -24], [0x03ff, 1023 * 2 ** -24],
    [0x0400, 2 ** -14], [0x7bff, 65504], [0x8000, -0], [0x0000, 0], [0x7c00, Infinity], [0xfc00, -Infinity],
  ];
  const out = hostTensorToFloat32({ dtype: 'f16', shape: [cases.length], data: halves(cases.map(([bits]) => bits), 1) });
  cases.forEach(([bits, value], i) => assert.equal(Object.is(out[i], value), true, `0x${bits.toString(16)} -> ${out[i]}, expected ${value}`));
  const nan = hostTensorToFloat32({ dtype: 'f16', shape: [1], data: halves([0x7e00]) });
  assert.ok(Number.isNaN(nan[0]));
});

test('bf16 is the top half of an f32', () => {
  const out = hostTensorToFloat32({ dtype: 'bf16', shape: [2, 2], data: halves([0x3f80, 0xc040, 0x0001, 0x7f80], 3) });
  assert.deepEqual(Array.from(out), [1, -3, 2 ** -133, Infinity]);
});

test('f32 round-trips bit-exactly from an unaligned offset', () => {
  const values = Float32Array.of(1.5, -0.1, 3.4028234663852886e38, 1e-45);
  const bytes = new Uint8Array(values.byteLength + 1);
  bytes.set(new Uint8Array(values.buffer), 1);
  const out = hostTensorToFloat32({ dtype: 'f32', shape: [4], data: bytes.subarray(1) });
  assert.deepEqual(out, values);
  assert.notEqual(out.buffer, bytes.buffer);
});

test('a byte count that does not match the shape is an invalid_model KeelError', () => {
  assert.throws(
    () => hostTensorToFloat32({ dtype: 'bf16', shape: [3, 2], data: new Uint8Array(10) }),
    (e: unknown) => e instanceof KeelError && e.kind === 'invalid_model' && /shape \[3, 2\].*bf16.*10 bytes, expected 12/.test(e.message),
  );
});
