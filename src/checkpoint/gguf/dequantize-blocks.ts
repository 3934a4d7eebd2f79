import { halfToFloatTable } from '../../tensor/host-dtype.ts';

/*
 * ggml's 32-value block formats, each block one or two fp16 factors and packed integers:
 *
 *   Q8_0  d, int8 q[32]                 x = d·q
 *   Q4_0  d, nibbles[16]                x = d·(q − 8)
 *   Q4_1  d, m, nibbles[16]             x = d·q + m
 *   Q5_0  d, high bits u32, nibbles[16] x = d·(q − 16)
 *   Q5_1  d, m, high bits, nibbles[16]  x = d·q + m
 *
 * Nibble byte j holds value j in its low half and value j + 16 in its high half; a 5-bit value's
 * fifth bit is bit j of the little-endian u32 of high bits (value j + 16: bit j + 16).
 * Arithmetic is float32 (Math.fround), as ggml's reference dequantizers compute.
 */

const f = Math.fround;

export function dequantizeQ8_0(src: Uint8Array, out: Float32Array): void {
  const half = halfToFloatTable();
  const view = new DataView(src.buffer, src.byteOffset, src.byteLength);
  for (let b = 0, o = 0, at = 0; o < out.length; b++, o += 32, at += 34) {
    const d = half[view.getUint16(at, true)];
    for (let j = 0; j < 32; j++) out[o + j] = f(d * view.getInt8(at + 2 + j));
  }
}

export function dequantizeQ4_0(src: Uint8Array, out: Float32Array): void {
  const half = halfToFloatTable();
  const view = new DataView(src.buffer, src.byteOffset, src.byteLength);
  for (let o = 0, at = 0; o < out.length; o += 32, at += 18) {
    const d = half[view.getUint16(at, true)];
    for (let j = 0; j < 16; j++) {
      const byte = src[at + 2 + j];
      out[o + j] = f(d * ((byte & 0x0f) - 8));
      out[o + j + 16] = f(d * ((byte >> 4) - 8));
    }
  }
}

export function dequantizeQ4_1(src: Uint8Array, out: Float32Array): void {
  const half = halfToFloatTable();
  const view = new DataView(src.buffer, src.byteOffset, src.byteLength);
  for (let o = 0, at = 0; o < out.length; o += 32, at += 20) {
    const d = half[view.getUint16(at, true)];
    const m = half[view.getUint16(at + 2, true)];
    for (let j = 0; j < 16; j++) {
      const byte = src[at + 4 + j];
      out[o + j] = f(f(d * (byte & 0x0f)) + m);
      out[o + j + 16] = f(f(d * (byte >> 4)) + m);
    }
  }
}

export function dequantizeQ5_0(src: Uint8Array, out: Float32Array): void {
  const half = halfToFloatTable();
  const view = new DataView(src.buffer, src.byteOffset, src.byteLength);
  for (let o = 0, at = 0; o < out.length; o += 32, at += 22) {
    const d = half[view.getUint16(at, true)];
    const high = view.getUint32(at + 2, true);
    for (let j = 0; j < 16; j++) {
      const byte = src[at + 6 + j];
      out[o + j] = f(d * (((byte & 0x0f) | (((high >>> j) & 1) << 4)) - 16));
      out[o + j + 16] = f(d * (((byte >> 4) | (((high >>> (j + 16)) & 1) << 4)) - 16));
    }
  }
}

export function dequantizeQ5_1(src: Uint8Array, out: Float32Array): void {
  const half = halfToFloatTable();
  const view = new DataView(src.buffer, src.byteOffset, src.byteLength);
  for (let o = 0, at = 0; o < out.length; o += 32, at += 24) {
    const d = half[view.getUint16(at, true)];
    const m = half[view.getUint16(at + 2, true)];
    const high = view.getUint32(at + 4, true);
    for (let j = 0; j < 16; j++) {
      const byte = src[at + 8 + j];
      out[o + j] = f(f(d * ((byte & 0x0f) | (((high >>> j) & 1) << 4))) + m);
      out[o + j + 16] = f(f(d * ((byte >> 4) | (((high >>> (j + 16)) & 1) << 4))) + m);
    }
  }
}
