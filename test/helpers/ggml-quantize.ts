import { floatToF16Bits, halfToFloatTable } from '../../src/tensor/host-dtype.ts';

/**
 * Quantizers of a few ggml block formats, for writing GGUF test files: simple choices of scales
 * (absolute maxima, per-sub-block ranges), not llama.cpp's error-minimizing searches. Each takes
 * a whole number of blocks of values and returns the blocks' bytes, laid out as
 * src/checkpoint/gguf/dequantize*.ts documents.
 */

/** The fp16 value nearest to x, and its bits. */
function half(x: number): { bits: number; value: number } {
  const bits = floatToF16Bits(x);
  return { bits, value: halfToFloatTable()[bits] };
}

function blocksOf(values: Float32Array, size: number): number {
  if (values.length % size !== 0) throw new Error(`${values.length} values are not whole blocks of ${size}`);
  return values.length / size;
}

const clamp = (v: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, v));

function absMax(values: Float32Array, from: number, count: number): number {
  let m = 0;
  for (let i = from; i < from + count; i++) m = Math.max(m, Math.abs(values[i]));
  return m;
}

/** Q8_0: d = max|x| / 127, q = round(x / d). */
export function quantizeQ8_0(values: Float32Array): Uint8Array {
  const n = blocksOf(values, 32);
  const out = new Uint8Array(n * 34);
  const view = new DataView(out.buffer);
  for (let b = 0; b < n; b++) {
    const d = half(absMax(values, 32 * b, 32) / 127);
    view.setUint16(34 * b, d.bits, true);
    for (let j = 0; j < 32; j++) view.setInt8(34 * b + 2 + j, d.value === 0 ? 0 : clamp(Math.round(values[32 * b + j] / d.value), -127, 127));
  }
  return out;
}

/** Q4_0: d = max|x| / 7, q = round(x / d) + 8 in 0..15. */
export function quantizeQ4_0(values: Float32Array): Uint8Array {
  const n = blocksOf(values, 32);
  const out = new Uint8Array(n * 18);
  const view = new DataView(out.buffer);
  for (let b = 0; b < n; b++) {
    const d = half(absMax(values, 32 * b, 32) / 7);
    view.setUint16(18 * b, d.bits, true);
    const q = (j: number) => (d.value === 0 ? 8 : clamp(Math.round(values[32 * b + j] / d.value) + 8, 0, 15));
    for (let j = 0; j < 16; j++) out[18 * b + 2 + j] = q(j) | (q(j + 16) << 4);
  }
  return out;
}

/** Q8_K: d = max|x| / 127 in float32, q = round(x / d), and the block sums of 16. */
export function quantizeQ8_K(values: Float32Array): Uint8Array {
  const n = blocksOf(values, 256);
  const out = new Uint8Array(n * 292);
  const view = new DataView(out.buffer);
  for (let b = 0; b < n; b++) {
    const at = 292 * b;
    const d = Math.fround(absMax(values, 256 * b, 256) / 127);
    view.setFloat32(at, d, true);
    for (let j = 0; j < 256; j++) view.setInt8(at + 4 + j, d === 0 ? 0 : clamp(Math.round(values[256 * b + j] / d), -127, 127));
    for (let g = 0; g < 16; g++) {
      let sum = 0;
      for (let j = 0; j < 16; j++) sum += view.getInt8(at + 4 + 16 * g + j);
      view.setInt16(at + 260 + 2 * g, sum, true);
    }
  }
  return out;
}

/**
 * Q4_K: each sub-block of 32 spans [lo, hi] (lo <= 0) in 15 steps: scale (hi - lo) / 15 and
 * min -lo, both stored as 6-bit multiples of the super-block's d and dmin.
 */
export function quantizeQ4_K(values: Float32Array): Uint8Array {
  const n = blocksOf(values, 256);
  const out = new Uint8Array(n * 144);
  const view = new DataView(out.buffer);
  for (let b = 0; b < n; b++) {
    const at = 144 * b;
    const x = values.subarray(256 * b, 256 * b + 256);
    const scales: number[] = [];
    const mins: number[] = [];
    for (let j = 0; j < 8; j++) {
      const sub = x.subarray(32 * j, 32 * j + 32);
      const lo = Math.min(0, ...sub);
      const hi = Math.max(...sub);
      scales.push((hi - lo) / 15);
      mins.push(-lo);
    }
    const d = half(Math.max(...scales) / 63);
    const dmin = half(Math.max(...mins) / 63);
    view.setUint16(at, d.bits, true);
    view.setUint16(at + 2, dmin.bits, true);
    const sc = scales.map((s) => (d.value === 0 ? 0 : clamp(Math.round(s / d.value), 0, 63)));
    const mn = mins.map((m) => (dmin.value === 0 ? 0 : clamp(Math.round(m / dmin.value), 0, 63)));
    packScalesMins(out, at + 4, sc, mn);
    for (let c = 0; c < 4; c++) {
      for (let l = 0; l < 32; l++) {
        const q = (j: number) => {
          const step = d.value * sc[j];
          return step === 0 ? 0 : clamp(Math.round((x[32 * j + l] + dmin.value * mn[j]) / step), 0, 15);
        };
        out[at + 16 + 32 * c + l] = q(2 * c) | (q(2 * c + 1) << 4);
      }
    }
  }
  return out;
}

/** The 12 bytes of Q4_K/Q5_K's eight 6-bit scales and mins. */
function packScalesMins(out: Uint8Array, at: number, sc: number[], mn: number[]): void {
  for (let j = 0; j < 4; j++) {
    out[at + j] = sc[j] | ((sc[j + 4] >> 4) << 6);
    out[at + j + 4] = mn[j] | ((mn[j + 4] >> 4) << 6);
    out[at + j + 8] = (sc[j + 4] & 0x0f) | ((mn[j + 4] & 0x0f) << 4);
  }
}

/** Q6_K: each group of 16 gets an int8 scale of the super-block's d, values q - 32 in -32..31. */
export function quantizeQ6_K(values: Float32Array): Uint8Array {
  const n = blocksOf(values, 256);
  const out = new Uint8Array(n * 210);
  const view = new DataView(out.buffer);
  for (let b = 0; b < n; b++) {
    const at = 210 * b;
    const x = values.subarray(256 * b, 256 * b + 256);
    const groupScales = Array.from({ length: 16 }, (_, g) => absMax(x, 16 * g, 16) / 31);
    const d = half(Math.max(...groupScales) / 127);
    view.setUint16(at + 208, d.bits, true);
    const sc = groupScales.map((s) => (d.value === 0 ? 0 : clamp(Math.round(s / d.value), -128, 127)));
    sc.forEach((s, g) => view.setInt8(at + 192 + g, s));
    const q = x.map((v, i) => {
      const step = d.value * sc[i >> 4];
      return step === 0 ? 32 : clamp(Math.round(v / step) + 32, 0, 63);
    });
    for (let part = 0; part < 2; part++) {
      const y = 128 * part;
      for (let l = 0; l < 32; l++) {
        const [q0, q1, q2, q3] = [q[y + l], q[y + l + 32], q[y + l + 64], q[y + l + 96]];
        out[at + 64 * part + l] = (q0 & 0x0f) | ((q2 & 0x0f) << 4);
        out[at + 64 * part + l + 32] = (q1 & 0x0f) | ((q3 & 0x0f) << 4);
        out[at + 128 + 32 * part + l] = (q0 >> 4) | ((q1 >> 4) << 2) | ((q2 >> 4) << 4) | ((q3 >> 4) << 6);
      }
    }
  }
  return out;
}
