import { floatToFp8E4m3, fp8E4m3Values, FP8_E4M3_MAX, type QuantizedWeight } from '../../../tensor/quantized-weight.ts';

/**
 * Dynamic per-token FP8 activations, the CPU twin of the CUDA backend's W8A8 path
 * (cuda/kernels/fp8-activations.cu and w8a8-linear.ts): each row of x [rows, cols] gets the scale
 * max|x| / 448 (1 for a row of zeros), a float32, and each value the e4m3 code of x / scale (the
 * quotient a float32, ties to even, saturating at ±448).
 */
export function quantizeRowsE4m3(x: Float32Array, rows: number, cols: number): { codes: Uint8Array; scales: Float32Array } {
  const codes = new Uint8Array(rows * cols);
  const scales = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    const at = r * cols;
    let amax = 0;
    for (let k = 0; k < cols; k++) amax = Math.max(amax, Math.abs(x[at + k]));
    const scale = amax === 0 ? 1 : Math.fround(amax / FP8_E4M3_MAX);
    scales[r] = scale;
    for (let k = 0; k < cols; k++) codes[at + k] = floatToFp8E4m3(Math.fround(x[at + k] / scale));
  }
  return { codes, scales };
}

/**
 * W8A8: out [rows, w.rows] = x [rows, w.cols] · Wᵀ (+ bias) for an fp8 weight with one scale per
 * output row and no act-order, the activations quantized by quantizeRowsE4m3: each output is
 * Σ code values (exact products, summed in float64) × the token's scale × the weight row's, plus
 * the bias, rounded to float32 once. The GPU's FP8 GEMM sums in float32 in its own order, so the two
 * agree to float32 accumulation, not bit for bit.
 */
export function w8a8Matmul(x: Float32Array, rows: number, w: QuantizedWeight, bias: Float32Array | null, out: Float32Array): void {
  if (w.format !== 'fp8-e4m3' || w.groupSize !== w.cols || w.perm !== null) {
    throw new Error('w8a8Matmul: the weight must be fp8 with one scale per row and no act-order');
  }
  const { cols } = w;
  const values = fp8E4m3Values();
  const { codes, scales } = quantizeRowsE4m3(x, rows, cols);
  for (let r = 0; r < rows; r++) {
    const xa = r * cols;
    for (let o = 0; o < w.rows; o++) {
      const wa = o * cols;
      let acc = 0;
      for (let k = 0; k < cols; k++) acc += values[codes[xa + k]] * values[w.codes[wa + k]];
      out[r * w.rows + o] = Math.fround(acc * scales[r] * w.scales[o] + (bias === null ? 0 : bias[o]));
    }
  }
}
