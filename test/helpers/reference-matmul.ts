/**
 * x [rows, inDim] · wᵀ (w [outDim, inDim]) + bias: one float64 dot product per output in input
 * column order, then + bias, rounded to float32 once — the exact result the CPU matmuls promise,
 * so tests compare with it bit for bit.
 */
export function referenceMatmul(x: Float32Array, rows: number, w: Float32Array, outDim: number, inDim: number, bias: Float32Array | null): Float32Array {
  const out = new Float32Array(rows * outDim);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < outDim; o++) {
      let s = 0;
      for (let k = 0; k < inDim; k++) s += x[r * inDim + k] * w[o * inDim + k];
      out[r * outDim + o] = s + (bias === null ? 0 : bias[o]);
    }
  }
  return out;
}
