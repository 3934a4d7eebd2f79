import { halfToFloatTable } from '../../tensor/host-dtype.ts';

/*
 * ggml's K-quants: super-blocks of 256 values in sub-blocks with scales of their own.
 *
 *   Q4_K (144 bytes)  d, dmin (fp16), 12 bytes of 6-bit scales and mins for 8 sub-blocks of 32,
 *                     128 bytes of nibbles               x = d·scale·q − dmin·min
 *   Q5_K (176 bytes)  as Q4_K, plus 32 bytes of fifth bits before the nibbles
 *   Q6_K (210 bytes)  128 bytes of low nibbles, 64 of high 2-bit pairs, 16 int8 scales (one per
 *                     16 values), then d (fp16)        x = d·scale·(q − 32)
 *   Q8_K (292 bytes)  d (float32), int8 q[256], then 16 int16 block sums (unused here)
 *   Q2_K (84 bytes)   16 scale bytes (low nibble scale, high nibble min, one per 16 values), 64 bytes
 *                     of 2-bit values, then d and dmin (fp16)   x = d·scale·q − dmin·min
 *   Q3_K (110 bytes)  32 bytes of high bits, 64 bytes of 2-bit low parts, 12 bytes of 6-bit scales
 *                     (one per 16 values), then d (fp16)      x = d·(scale − 32)·(q − 4·(1 − high))
 *
 * Q4_K/Q5_K values run in four 64-value chunks; chunk c uses the 32 nibble bytes from 32c: their
 * low halves are sub-block 2c, their high halves sub-block 2c + 1, and (Q5_K) bit 2c resp. 2c + 1
 * of fifth-bit byte l is the fifth bit of value l of those sub-blocks.
 * Q6_K runs in two 128-value halves, each with 64 low-nibble bytes and 32 high-bit bytes: value
 * l + 32k (k = 0..3, l < 32) takes its low nibble from byte l (k even) or l + 32 (k odd), the low
 * half for k < 2, and bits 2k..2k+1 of high byte l; its scale is scales[l / 16 + 2k].
 * Q2_K/Q3_K run in two 128-value halves over 32 bytes of 2-bit values each: value l + 16·i of the
 * half (i = 0..7, l < 16) is bits 2⌊i/2⌋.. of byte l + 16·(i mod 2), with scale 8·half + i. A Q3_K
 * value's high bit is bit 4·half + ⌊i/2⌋ of high byte l + 16·(i mod 2). Q3_K scale s has its low
 * four bits in byte s (s < 8, low nibble) or s − 8 (high nibble), its top two in bits 2⌊s/4⌋ of
 * byte 8 + s mod 4.
 * Arithmetic is float32 (Math.fround), as ggml's reference dequantizers compute.
 */

const f = Math.fround;

/** Sub-block j's 6-bit scale and min from the 12 packed bytes at `at`: j < 4 in bytes j and j + 4, else split over three bytes. */
export function scaleMin(src: Uint8Array, at: number, j: number): [number, number] {
  if (j < 4) return [src[at + j] & 63, src[at + j + 4] & 63];
  return [(src[at + j + 4] & 0x0f) | ((src[at + j - 4] >> 6) << 4), (src[at + j + 4] >> 4) | ((src[at + j] >> 6) << 4)];
}

function dequantizeQ45K(src: Uint8Array, out: Float32Array, blockBytes: number, fifthBits: boolean): void {
  const half = halfToFloatTable();
  const view = new DataView(src.buffer, src.byteOffset, src.byteLength);
  for (let o = 0, at = 0; o < out.length; o += 256, at += blockBytes) {
    const d = half[view.getUint16(at, true)];
    const dmin = half[view.getUint16(at + 2, true)];
    const scales = at + 4;
    const high = at + 16;
    const nibbles = fifthBits ? at + 48 : at + 16;
    for (let c = 0; c < 4; c++) {
      const [s1, m1] = scaleMin(src, scales, 2 * c);
      const [s2, m2] = scaleMin(src, scales, 2 * c + 1);
      const d1 = f(d * s1), min1 = f(dmin * m1);
      const d2 = f(d * s2), min2 = f(dmin * m2);
      const q = nibbles + 32 * c;
      const y = o + 64 * c;
      for (let l = 0; l < 32; l++) {
        const byte = src[q + l];
        const h = fifthBits ? src[high + l] : 0;
        out[y + l] = f(f(d1 * ((byte & 0x0f) + (((h >> (2 * c)) & 1) << 4))) - min1);
        out[y + 32 + l] = f(f(d2 * ((byte >> 4) + (((h >> (2 * c + 1)) & 1) << 4))) - min2);
      }
    }
  }
}

export function dequantizeQ4_K(src: Uint8Array, out: Float32Array): void {
  dequantizeQ45K(src, out, 144, false);
}

export function dequantizeQ5_K(src: Uint8Array, out: Float32Array): void {
  dequantizeQ45K(src, out, 176, true);
}

export function dequantizeQ6_K(src: Uint8Array, out: Float32Array): void {
  const half = halfToFloatTable();
  const view = new DataView(src.buffer, src.byteOffset, src.byteLength);
  for (let o = 0, at = 0; o < out.length; o += 256, at += 210) {
    const d = half[view.getUint16(at + 208, true)];
    for (let part = 0; part < 2; part++) {
      const low = at + 64 * part;
      const high = at + 128 + 32 * part;
      const scales = at + 192 + 8 * part;
      const y = o + 128 * part;
      // Values l < 16 and l >= 16 of each 32 have scales of their own: four per half of l.
      for (let half16 = 0; half16 < 2; half16++) {
        const s0 = f(d * view.getInt8(scales + half16));
        const s1 = f(d * view.getInt8(scales + half16 + 2));
        const s2 = f(d * view.getInt8(scales + half16 + 4));
        const s3 = f(d * view.getInt8(scales + half16 + 6));
        for (let l = 16 * half16; l < 16 * half16 + 16; l++) {
          const h = src[high + l];
          const a = src[low + l];
          const b = src[low + l + 32];
          out[y + l] = f(s0 * (((a & 0x0f) | ((h & 3) << 4)) - 32));
          out[y + 32 + l] = f(s1 * (((b & 0x0f) | (((h >> 2) & 3) << 4)) - 32));
          out[y + 64 + l] = f(s2 * (((a >> 4) | (((h >> 4) & 3) << 4)) - 32));
          out[y + 96 + l] = f(s3 * (((b >> 4) | (((h >> 6) & 3) << 4)) - 32));
        }
      }
    }
  }
}

export function dequantizeQ8_K(src: Uint8Array, out: Float32Array): void {
  const view = new DataView(src.buffer, src.byteOffset, src.byteLength);
  for (let o = 0, at = 0; o < out.length; o += 256, at += 292) {
    const d = view.getFloat32(at, true);
    for (let j = 0; j < 256; j++) out[o + j] = f(d * view.getInt8(at + 4 + j));
  }
}

export function dequantizeQ2_K(src: Uint8Array, out: Float32Array): void {
  const half = halfToFloatTable();
  const view = new DataView(src.buffer, src.byteOffset, src.byteLength);
  for (let o = 0, at = 0; o < out.length; o += 256, at += 84) {
    const d = half[view.getUint16(at + 80, true)];
    const dmin = half[view.getUint16(at + 82, true)];
    for (let part = 0; part < 2; part++) {
      const q = at + 16 + 32 * part;
      for (let i = 0; i < 8; i++) {
        const sc = src[at + 8 * part + i];
        const dl = f(d * (sc & 0x0f));
        const ml = f(dmin * (sc >> 4));
        const shift = 2 * (i >> 1);
        const y = o + 128 * part + 16 * i;
        const bytes = q + 16 * (i & 1);
        for (let l = 0; l < 16; l++) out[y + l] = f(f(dl * ((src[bytes + l] >> shift) & 3)) - ml);
      }
    }
  }
}

function q3kScale(src: Uint8Array, scales: number, s: number): number {
  const low = s < 8 ? src[scales + s] & 0x0f : src[scales + s - 8] >> 4;
  const high = (src[scales + 8 + (s & 3)] >> (2 * (s >> 2))) & 3;
  return (low | (high << 4)) - 32;
}

export function dequantizeQ3_K(src: Uint8Array, out: Float32Array): void {
  const half = halfToFloatTable();
  const view = new DataView(src.buffer, src.byteOffset, src.byteLength);
  for (let o = 0, at = 0; o < out.length; o += 256, at += 110) {
    const d = half[view.getUint16(at + 108, true)];
    for (let part = 0; part < 2; part++) {
      const q = at + 32 + 32 * part;
      for (let i = 0; i < 8; i++) {
        const dl = f(d * q3kScale(src, at + 96, 8 * part + i));
        const shift = 2 * (i >> 1);
        const highBit = 4 * part + (i >> 1);
        const y = o + 128 * part + 16 * i;
        const lane = 16 * (i & 1);
        for (let l = 0; l < 16; l++) {
          const low = (src[q + lane + l] >> shift) & 3;
          const high = (src[at + lane + l] >> highBit) & 1;
          out[y + l] = f(dl * (low - (high ? 0 : 4)));
        }
      }
    }
  }
}
