import { roundHalfEven } from '../../../tensor/quantize-rtn.ts';
import type { QuantizedWeight } from '../../../tensor/quantized-weight.ts';

/**
 * LLM.int8() (Dettmers et al. 2022), as bitsandbytes runs an 8-bit layer: out [rows, w.rows] =
 * x [rows, w.cols] · Wᵀ (+ bias) for an int8 weight with one scale per output row (bitsandbytes'
 * SCB / 127) and `w.mixedInt8`'s outlier threshold t:
 *
 * 1. outlier columns: the input columns where some row has |x| >= t (none when t = 0);
 * 2. each row's activations quantized to int8, symmetric: scale absmax / 127 over the row's
 *    values below t, code round(x · (127 / absmax)) (float32, half to even), 0 in outlier columns;
 * 3. the int8 product, summed exactly, times the row's and the weight row's scales;
 * 4. plus the outlier columns in full precision against the dequantized weight columns.
 *
 * Each output adds its parts in float64 and is rounded to float32 once. The CUDA kernels
 * (llm-int8.cu) compute the same codes from the same bf16 activations.
 */
export function llmInt8Matmul(x: Float32Array, rows: number, w: QuantizedWeight, bias: Float32Array | null, out: Float32Array): void {
  if (w.mixedInt8 === null || w.format !== 'int8' || w.zeros !== null || w.perm !== null || w.groupSize !== w.cols) {
    throw new Error('llmInt8Matmul: the weight must be symmetric int8 with one scale per row, no act-order, and an outlier threshold');
  }
  const { cols, codes } = w;
  const { outliers, codes: xCodes, rowScales } = quantizeActivationsInt8(x, rows, cols, w.mixedInt8.threshold);
  for (let o = 0; o < w.rows; o++) {
    const at = o * cols;
    const scale = w.scales[o];
    const b = bias === null ? 0 : bias[o];
    for (let r = 0; r < rows; r++) {
      const xa = r * cols;
      let acc = 0;
      for (let k = 0; k < cols; k++) acc += xCodes[xa + k] * (codes[at + k] - 128);
      let sum = acc * rowScales[r] * scale;
      for (const k of outliers) sum += x[xa + k] * Math.fround((codes[at + k] - 128) * scale);
      out[r * w.rows + o] = sum + b;
    }
  }
}

/** Step 1 and 2 above: the outlier columns in increasing order, the int8 codes [rows, cols] and each row's scale absmax / 127. */
export function quantizeActivationsInt8(x: Float32Array, rows: number, cols: number, threshold: number): { outliers: number[]; codes: Int8Array; rowScales: Float32Array } {
  const isOutlier = (v: number) => threshold > 0 && Math.abs(v) >= threshold;
  const outlierColumn = new Uint8Array(cols);
  for (let i = 0; i < rows * cols; i++) if (isOutlier(x[i])) outlierColumn[i % cols] = 1;
  const codes = new Int8Array(rows * cols);
  const rowScales = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    const at = r * cols;
    let absmax = 0;
    for (let k = 0; k < cols; k++) if (!isOutlier(x[at + k])) absmax = Math.max(absmax, Math.abs(x[at + k]));
    if (absmax === 0) continue;
    rowScales[r] = absmax / 127;
    const inverse = Math.fround(127 / absmax);
    for (let k = 0; k < cols; k++) {
      if (outlierColumn[k]) continue;
      codes[at + k] = Math.max(-127, Math.min(127, roundHalfEven(Math.fround(x[at + k] * inverse))));
    }
  }
  const outliers: number[] = [];
  outlierColumn.forEach((flag, k) => flag && outliers.push(k));
  return { outliers, codes, rowScales };
}
