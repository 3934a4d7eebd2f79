import type { HostTensor, WeightDType } from './host-tensor.ts';
import { invalidModel } from '../errors.ts';

/**
 * Host-side conversions between checkpoint dtypes and float32. Checkpoint bytes are little-endian
 * and so is every host Keel runs on, so typed-array views read them directly.
 */
export const DTYPE_BYTES: Record<WeightDType, number> = { f32: 4, f16: 2, bf16: 2 };

const scratch = new Float32Array(1);
const scratchBits = new Uint32Array(scratch.buffer);

let f16Table: Float32Array | null = null;

/** All 65536 half-precision values, built once: decoding becomes one table lookup per element. */
export function halfToFloatTable(): Float32Array {
  if (f16Table) return f16Table;
  f16Table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exponent = (h >> 10) & 0x1f;
    const mantissa = h & 0x3ff;
    if (exponent === 0) f16Table[h] = sign * mantissa * 2 ** -24;
    else if (exponent === 0x1f) f16Table[h] = mantissa ? NaN : sign * Infinity;
    else f16Table[h] = sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
  }
  return f16Table;
}

/** float32 -> bfloat16 bits, rounding to nearest even (NaN stays a quiet NaN). */
export function floatToBf16Bits(value: number): number {
  scratch[0] = value;
  const bits = scratchBits[0];
  if ((bits & 0x7fffffff) > 0x7f800000) return (bits >>> 16) | 0x40;
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

/** The bfloat16 value nearest `value` (rounding to nearest even), as a number. */
export function roundToBf16(value: number): number {
  scratchBits[0] = floatToBf16Bits(value) << 16;
  return scratch[0];
}

/** float32 -> IEEE half bits, rounding to nearest even, with subnormals and overflow to infinity. */
export function floatToF16Bits(value: number): number {
  scratch[0] = value;
  const bits = scratchBits[0];
  const sign = (bits >>> 16) & 0x8000;
  const exponent = (bits >>> 23) & 0xff;
  const mantissa = bits & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa ? 0x200 : 0);
  const halfExponent = exponent - 127 + 15;
  if (halfExponent >= 0x1f) return sign | 0x7c00;
  if (halfExponent <= 0) {
    if (halfExponent < -10) return sign;
    // Subnormal half: the 24-bit significand counted in units of 2^-24.
    const significand = mantissa | 0x800000;
    const shift = 14 - halfExponent;
    const rest = significand & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    let half = significand >>> shift;
    if (rest > halfway || (rest === halfway && half & 1)) half++;
    return sign | half;
  }
  let half = (halfExponent << 10) | (mantissa >>> 13);
  const rest = mantissa & 0x1fff;
  // A carry out of the mantissa correctly bumps the exponent (up to infinity).
  if (rest > 0x1000 || (rest === 0x1000 && half & 1)) half++;
  return sign | half;
}

/** Views `bytes` as `T`, copying first when the offset is not aligned for the element size. */
function alignedView<T>(bytes: Uint8Array, elementBytes: number, make: (buffer: ArrayBufferLike, offset: number, length: number) => T): T {
  const source = bytes.byteOffset % elementBytes === 0 ? bytes : bytes.slice();
  return make(source.buffer, source.byteOffset, source.byteLength / elementBytes);
}

/** Decodes checkpoint bytes into a fresh Float32Array (never a view of `t.data`). */
export function hostTensorToFloat32(t: HostTensor): Float32Array {
  const count = t.shape.reduce((n, d) => n * d, 1);
  const expected = count * DTYPE_BYTES[t.dtype];
  if (t.data.length !== expected) {
    throw invalidModel(`weight of shape [${t.shape.join(', ')}] and dtype ${t.dtype} has ${t.data.length} bytes, expected ${expected}`);
  }
  if (t.dtype === 'f32') {
    return alignedView(t.data, 4, (b, o, n) => new Float32Array(b, o, n)).slice();
  }
  const halves = alignedView(t.data, 2, (b, o, n) => new Uint16Array(b, o, n));
  const out = new Float32Array(halves.length);
  if (t.dtype === 'bf16') {
    const outBits = new Uint32Array(out.buffer);
    for (let i = 0; i < halves.length; i++) outBits[i] = halves[i] << 16;
  } else {
    const table = halfToFloatTable();
    for (let i = 0; i < halves.length; i++) out[i] = table[halves[i]];
  }
  return out;
}

export function float32ToHostTensor(values: Float32Array, dtype: WeightDType, shape: number[]): HostTensor {
  if (dtype === 'f32') return { dtype, shape, data: new Uint8Array(values.slice().buffer) };
  const halves = new Uint16Array(values.length);
  if (dtype === 'bf16') {
    // floatToBf16Bits inlined over the bits: this loop converts whole dequantized GGUF models.
    const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
    for (let i = 0; i < bits.length; i++) {
      const b = bits[i];
      halves[i] = (b & 0x7fffffff) > 0x7f800000 ? (b >>> 16) | 0x40 : (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
    }
  } else {
    for (let i = 0; i < values.length; i++) halves[i] = floatToF16Bits(values[i]);
  }
  return { dtype, shape, data: new Uint8Array(halves.buffer) };
}
