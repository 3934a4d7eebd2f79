import { codeOf, fitGrid, gridOfRange, type QuantizerOptions } from './group-quantizer.ts';

/** α of s = mean|x|^α tried by the search (the paper's grid of 20 points in [0, 1)). */
export const AWQ_GRID = 20;

export interface AwqSearch {
  /** Per input column: the weight's columns are multiplied by it, the input divided by it. */
  scales: Float64Array;
  alpha: number;
  /** Output error (outputError) at the chosen α, and with no scaling (α = 0). */
  error: number;
  unscaledError: number;
}

/**
 * AWQ's activation-aware scale search (Lin et al., "AWQ: Activation-aware Weight Quantization for
 * LLM Compression and Acceleration", 2023): the input channels that carry large activations
 * matter most, and scaling a weight column up by s (the input down by s) shrinks its relative
 * rounding error. For α on a grid in [0, 1), s = mean|x|^α per input channel (normalized by
 * √(max · min) so the scales straddle 1, as AutoAWQ does); the weight W·diag(s) is quantized
 * round-to-nearest, and the α whose Q(W·diag(s))·diag(1/s) gives the smallest output error on
 * the calibration inputs wins: `outputErrorOf(approx)`, outputError of W against approx on them
 * (on the quantization device: QuantizeDevice.outputError). The caller folds 1/s into the op
 * before the layer.
 */
export function awqSearchScales(
  w: Float64Array,
  rows: number,
  cols: number,
  meanAbs: Float64Array,
  groupSize: number | null,
  o: QuantizerOptions,
  outputErrorOf: (approx: Float64Array) => number,
): AwqSearch {
  let best: AwqSearch | null = null;
  let unscaledError = NaN;
  for (let step = 0; step < AWQ_GRID; step++) {
    const alpha = step / AWQ_GRID;
    const scales = channelScales(meanAbs, alpha);
    const error = outputErrorOf(scaledRoundTrip(w, rows, cols, scales, groupSize, o));
    if (step === 0) unscaledError = error;
    if (best === null || error < best.error) best = { scales, alpha, error, unscaledError: NaN };
  }
  return { ...best!, unscaledError };
}

function channelScales(meanAbs: Float64Array, alpha: number): Float64Array {
  const s = meanAbs.map((m) => Math.max(m, 1e-4) ** alpha);
  let lo = Infinity;
  let hi = 0;
  for (const v of s) {
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  const norm = Math.sqrt(lo * hi);
  return s.map((v) => v / norm);
}

/**
 * The weight AWQ's quantization of W·diag(s) stands for, back in the unscaled input space: each
 * (row, group) of W·diag(s) rounded to nearest on its own grid (quantizeRoundToNearestGroups'
 * grid and codes), dequantized, each column divided by s again. One pass a group, in place of
 * scaling, quantizing, dequantizing and unscaling the whole matrix in turn: the search runs it
 * twenty times a linear, on the host, and that was most of a 1B model's AWQ time.
 */
function scaledRoundTrip(w: Float64Array, rows: number, cols: number, s: Float64Array, groupSize: number | null, o: QuantizerOptions): Float64Array {
  const size = groupSize ?? cols;
  const out = new Float64Array(w.length);
  for (let r = 0; r < rows; r++) {
    const at = r * cols;
    for (let c0 = 0; c0 < cols; c0 += size) {
      const c1 = Math.min(cols, c0 + size);
      let lo = 0;
      let hi = 0;
      for (let c = c0; c < c1; c++) {
        const v = w[at + c] * s[c];
        out[at + c] = v;
        lo = Math.min(lo, v);
        hi = Math.max(hi, v);
      }
      const grid = gridOfRange(lo, hi, o);
      for (let c = c0; c < c1; c++) out[at + c] = (grid.scale * (codeOf(out[at + c], grid, o.bits) - grid.zero)) / s[c];
    }
  }
  return out;
}

/** AWQ's clipping grid: a group's max|w| × (1 − i / AWQ_CLIP_GRID) for i < AWQ_CLIP_STEPS (AutoAWQ's n_grid 20, max_shrink 0.5). */
export const AWQ_CLIP_GRID = 20;
const AWQ_CLIP_STEPS = 10;

/**
 * AWQ's weight clipping (AutoAWQ's auto_clip, after the scales are folded): a group's largest
 * weights stretch its grid over values most of it never takes, so clamping them to ±r · max|w|
 * can lower the output error though it changes those few weights. For each (row, group) of w
 * [rows, cols], in place, the r of the grid whose clamped round-to-nearest gives the group's own
 * partial outputs x_g · w_gᵀ over x [n, cols] (the inputs as the scaled weight sees them) the
 * smallest squared error is kept (r = 1 keeps the group as it is). Returns how many groups were
 * clamped.
 */
export function awqClip(w: Float64Array, cols: number, x: Float32Array, n: number, groupSize: number | null, o: QuantizerOptions): number {
  const size = groupSize ?? cols;
  const values = new Float64Array(size);
  const exact = new Float64Array(n);
  let clipped = 0;
  for (let r = 0; r < w.length / cols; r++) {
    for (let c0 = 0; c0 < cols; c0 += size) {
      const len = Math.min(size, cols - c0);
      const at = r * cols + c0;
      let top = 0;
      for (let c = 0; c < len; c++) top = Math.max(top, Math.abs(w[at + c]));
      if (top === 0) continue;
      for (let t = 0; t < n; t++) exact[t] = groupDot(x, t * cols + c0, w, at, len);
      let best = { error: Infinity, bound: top };
      for (let i = 0; i < AWQ_CLIP_STEPS; i++) {
        const bound = top * (1 - i / AWQ_CLIP_GRID);
        for (let c = 0; c < len; c++) values[c] = Math.min(bound, Math.max(-bound, w[at + c]));
        const grid = fitGrid(values, 0, len, o);
        for (let c = 0; c < len; c++) values[c] = grid.scale * (codeOf(values[c], grid, o.bits) - grid.zero);
        let error = 0;
        for (let t = 0; t < n; t++) error += (groupDot(x, t * cols + c0, values, 0, len) - exact[t]) ** 2;
        if (error < best.error) best = { error, bound };
      }
      if (best.bound < top) {
        clipped++;
        for (let c = 0; c < len; c++) w[at + c] = Math.min(best.bound, Math.max(-best.bound, w[at + c]));
      }
    }
  }
  return clipped;
}

function groupDot(x: Float32Array, xAt: number, w: ArrayLike<number>, wAt: number, len: number): number {
  let s = 0;
  for (let c = 0; c < len; c++) s += x[xAt + c] * w[wAt + c];
  return s;
}
