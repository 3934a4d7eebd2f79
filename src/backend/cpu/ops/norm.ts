/** out[r] = rmsNorm(x[r]) * weight for each of `rows` rows of width `dim`. */
export function rmsNorm(
  x: Float32Array,
  rows: number,
  dim: number,
  weight: Float32Array,
  eps: number,
  out: Float32Array,
): void {
  for (let r = 0; r < rows; r++) normalizeSpan(x, r * dim, dim, weight, eps, out, r * dim);
}

/** residual += x (rounded to float32, as the residual stream is stored), then out = rmsNorm(residual) * weight. */
export function addRmsNorm(
  x: Float32Array,
  residual: Float32Array,
  rows: number,
  dim: number,
  weight: Float32Array,
  eps: number,
  out: Float32Array,
): void {
  const n = rows * dim;
  for (let i = 0; i < n; i++) residual[i] += x[i];
  rmsNorm(residual, rows, dim, weight, eps, out);
}

/**
 * In place: RMS-normalize heads `firstHead .. firstHead + numHeads` of every row of `data`
 * ([rows, rowWidth], heads of `headDim` contiguous) with one shared `weight` [headDim].
 */
export function headRmsNorm(
  data: Float32Array,
  rows: number,
  rowWidth: number,
  firstHead: number,
  numHeads: number,
  headDim: number,
  weight: Float32Array,
  eps: number,
): void {
  for (let r = 0; r < rows; r++) {
    for (let h = firstHead; h < firstHead + numHeads; h++) {
      const at = r * rowWidth + h * headDim;
      normalizeSpan(data, at, headDim, weight, eps, data, at);
    }
  }
}

// Sums squares in float64 where HF uses float32, so outputs may differ from HF's in the last float32 bit.
function normalizeSpan(
  src: Float32Array,
  srcAt: number,
  len: number,
  weight: Float32Array,
  eps: number,
  dst: Float32Array,
  dstAt: number,
): void {
  let sumSquares = 0;
  for (let i = 0; i < len; i++) {
    const v = src[srcAt + i];
    sumSquares += v * v;
  }
  const inverseRms = 1 / Math.sqrt(sumSquares / len + eps);
  for (let i = 0; i < len; i++) dst[dstAt + i] = src[srcAt + i] * inverseRms * weight[i];
}

/**
 * out = LayerNorm of each group of `width` consecutive values of `rows` rows of `cols` (cols a
 * multiple of width): (v − mean) / √(var + eps) · weight[col] (+ bias[col]), weight and bias [cols],
 * bias null for none.
 */
export function layerNorm(x: Float32Array, rows: number, cols: number, width: number, weight: Float32Array, bias: Float32Array | null, eps: number, out: Float32Array): void {
  for (let at = 0; at < rows * cols; at += width) {
    const { mean, inverseStd } = layerNormStatistics(x, at, width, eps);
    const weightAt = at % cols;
    for (let i = 0; i < width; i++) out[at + i] = (x[at + i] - mean) * inverseStd * weight[weightAt + i] + (bias === null ? 0 : bias[weightAt + i]);
  }
}

/**
 * LayerNorm's mean and 1 / √(var + eps) of x[at .. at + width), the variance taken of v − mean.
 * In float64 where transformers uses float32 (the same last-bit caveat as RMSNorm's).
 */
export function layerNormStatistics(x: Float32Array, at: number, width: number, eps: number): { mean: number; inverseStd: number } {
  let sum = 0;
  for (let i = 0; i < width; i++) sum += x[at + i];
  const mean = sum / width;
  let squares = 0;
  for (let i = 0; i < width; i++) squares += (x[at + i] - mean) ** 2;
  return { mean, inverseStd: 1 / Math.sqrt(squares / width + eps) };
}
