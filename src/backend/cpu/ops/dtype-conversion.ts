import type { HostTensor } from '../../backend.ts';
import type { WeightDType } from '../../../model/model-config.ts';
import { invalidModel } from '../../../errors.ts';

const BYTES_PER_ELEMENT: Record<WeightDType, number> = { f32: 4, f16: 2, bf16: 2 };

/**
 * Decodes little-endian checkpoint bytes into a fresh Float32Array (never a view of `t.data`, so
 * the loader may reuse its buffers). Bytes are read one at a time: safetensors offsets need not be
 * aligned to the element size, and this stays correct on any host byte order.
 */
export function hostTensorToF32(t: HostTensor): Float32Array {
  const count = t.shape.reduce((n, d) => n * d, 1);
  const expected = count * BYTES_PER_ELEMENT[t.dtype];
  if (t.data.length !== expected) {
    throw invalidModel(
      `weight of shape [${t.shape.join(', ')}] and dtype ${t.dtype} has ${t.data.length} bytes, expected ${expected}`,
    );
  }
  const out = new Float32Array(count);
  // Writing bit patterns through a Uint32Array view of `out` keeps f32/bf16 exact (NaN payloads included).
  const outBits = new Uint32Array(out.buffer);
  const b = t.data;
  switch (t.dtype) {
    case 'f32':
      for (let i = 0, j = 0; i < count; i++, j += 4) {
        outBits[i] = (b[j] | (b[j + 1] << 8) | (b[j + 2] << 16) | (b[j + 3] << 24)) >>> 0;
      }
      break;
    case 'bf16':
      // bf16 is the top half of an f32.
      for (let i = 0, j = 0; i < count; i++, j += 2) {
        outBits[i] = ((b[j] << 16) | (b[j + 1] << 24)) >>> 0;
      }
      break;
    case 'f16': {
      const table = f16Table();
      for (let i = 0, j = 0; i < count; i++, j += 2) out[i] = table[b[j] | (b[j + 1] << 8)];
      break;
    }
  }
  return out;
}

let f16Values: Float32Array | null = null;

// All 65536 half-precision values, built once: a table lookup beats decoding bits per element.
function f16Table(): Float32Array {
  if (f16Values === null) {
    f16Values = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) f16Values[h] = f16BitsToNumber(h);
  }
  return f16Values;
}

/** IEEE 754 binary16 bit pattern -> number (exact: every half is representable in f32). */
function f16BitsToNumber(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const mantissa = h & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 0x1f) return mantissa === 0 ? sign * Infinity : NaN;
  return sign * 2 ** (exponent - 15) * (1 + mantissa / 1024);
}
