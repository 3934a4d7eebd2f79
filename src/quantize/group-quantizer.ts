import { floatToF16Bits, halfToFloatTable } from '../tensor/host-dtype.ts';

/**
 * A weight [rows, cols] quantized to `bits`-bit integer codes 0..2^bits − 1 in groups of input
 * columns, each (row, group) with a scale and a zero point: W[r, c] ≈ scale · (code − zero). This
 * is what GPTQ and AWQ checkpoints store (`keel quantize` packs it into their layouts).
 */
export interface GroupQuantized {
  rows: number;
  cols: number;
  bits: 2 | 4 | 8;
  /** Columns per group; equals cols for one group per row. */
  groupSize: number;
  /** [rows, cols] codes, columns in the weight's own order. */
  codes: Uint8Array;
  /** [rows, groups] and [rows, groups]. */
  scales: Float32Array;
  zeros: Uint8Array;
  /** The group of each input column ([cols]); column c is in group c / groupSize unless act-order reordered them. */
  groupOf: Int32Array;
}

export interface QuantizerOptions {
  bits: 2 | 4 | 8;
  /** Symmetric: zero = 2^(bits−1), scale from max|w| (GPTQ's `sym`); asymmetric: the range [min(w, 0), max(w, 0)] maps onto every code. */
  symmetric: boolean;
}

/** One (row, group)'s grid: the checkpoint stores the scale as float16, so the grid uses that value. */
export interface Grid {
  scale: number;
  zero: number;
}

/** The grid for values `w[from .. to)` (GPTQ's quantizer; a group of zeros gets scale 1, as an empty range would divide by zero). */
export function fitGrid(w: ArrayLike<number>, from: number, to: number, o: QuantizerOptions): Grid {
  let lo = 0;
  let hi = 0;
  for (let i = from; i < to; i++) {
    lo = Math.min(lo, w[i]);
    hi = Math.max(hi, w[i]);
  }
  return gridOfRange(lo, hi, o);
}

/** fitGrid's grid for values whose range, widened to hold 0, is [lo, hi]. */
export function gridOfRange(lo: number, hi: number, o: QuantizerOptions): Grid {
  const maxq = 2 ** o.bits - 1;
  if (o.symmetric) {
    const top = Math.max(-lo, hi);
    lo = -top;
    hi = top;
  }
  if (lo === 0 && hi === 0) return { scale: 1, zero: o.symmetric ? (maxq + 1) / 2 : 0 };
  const scale = toFloat16((hi - lo) / maxq);
  const zero = o.symmetric ? (maxq + 1) / 2 : Math.min(maxq, Math.max(0, roundHalfEven(-lo / scale)));
  return { scale, zero };
}

/** The code of w on the grid (round to nearest, ties to even, clamped to the codes). */
export function codeOf(w: number, grid: Grid, bits: number): number {
  return Math.min(2 ** bits - 1, Math.max(0, roundHalfEven(w / grid.scale) + grid.zero));
}

export function roundHalfEven(v: number): number {
  const r = Math.round(v);
  return Math.abs(r - v) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** The float16 value nearest v (scales are stored as float16). */
export function toFloat16(v: number): number {
  return halfToFloatTable()[floatToF16Bits(v)];
}

/** The weight the codes stand for, [rows, cols] float64. */
export function dequantizeGroups(q: GroupQuantized): Float64Array {
  const out = new Float64Array(q.rows * q.cols);
  const groups = q.scales.length / q.rows;
  for (let r = 0; r < q.rows; r++) {
    for (let c = 0; c < q.cols; c++) {
      const g = r * groups + q.groupOf[c];
      out[r * q.cols + c] = q.scales[g] * (q.codes[r * q.cols + c] - q.zeros[g]);
    }
  }
  return out;
}

/**
 * Round to nearest, no calibration: each (row, group of `groupSize` consecutive columns) gets its
 * own grid from its values. `groupSize` null: one group per row.
 */
export function quantizeRoundToNearestGroups(w: Float64Array, rows: number, cols: number, groupSize: number | null, o: QuantizerOptions): GroupQuantized {
  const size = groupSize ?? cols;
  const groups = Math.ceil(cols / size);
  const q = emptyGroupQuantized(rows, cols, o.bits, size);
  for (let r = 0; r < rows; r++) {
    for (let g = 0; g < groups; g++) {
      const from = r * cols + g * size;
      const to = r * cols + Math.min(cols, (g + 1) * size);
      const grid = fitGrid(w, from, to, o);
      q.scales[r * groups + g] = grid.scale;
      q.zeros[r * groups + g] = grid.zero;
      for (let i = from; i < to; i++) q.codes[i] = codeOf(w[i], grid, o.bits);
    }
  }
  return q;
}

export function emptyGroupQuantized(rows: number, cols: number, bits: 2 | 4 | 8, groupSize: number): GroupQuantized {
  const groups = Math.ceil(cols / groupSize);
  return {
    rows,
    cols,
    bits,
    groupSize,
    codes: new Uint8Array(rows * cols),
    scales: new Float32Array(rows * groups),
    zeros: new Uint8Array(rows * groups),
    groupOf: Int32Array.from({ length: cols }, (_, c) => Math.floor(c / groupSize)),
  };
}

/**
 * The layer's output error on calibration inputs: Σ over the rows of X [n, cols] of
 * ‖x · (W − Ŵ)ᵀ‖², W and Ŵ [rows, cols] (what GPTQ minimizes, and AWQ's search compares).
 */
export function outputError(x: Float32Array, n: number, w: Float64Array, approx: Float64Array, rows: number, cols: number): number {
  const diff = new Float64Array(rows * cols);
  for (let i = 0; i < diff.length; i++) diff[i] = w[i] - approx[i];
  let total = 0;
  for (let t = 0; t < n; t++) {
    const xt = t * cols;
    for (let r = 0; r < rows; r++) {
      const dr = r * cols;
      let s = 0;
      for (let c = 0; c < cols; c++) s += x[xt + c] * diff[dr + c];
      total += s * s;
    }
  }
  return total;
}
