import { decodeRow, type QuantizedWeight } from '../../../tensor/quantized-weight.ts';

/**
 * out[r, o] = dot(x[r, :], W[o, :]) + bias[o] for a weight in one of Keel's quantized layouts
 * (src/tensor/quantized-weight.ts), x [rows, w.cols], out [rows, w.rows].
 *
 * The weight is decoded one output row at a time into a float32 scratch row (never the whole
 * matrix), and every input row is dotted with it. Each dot accumulates in float64 in increasing
 * stored-column order, then adds the bias, and is rounded once, as `matmulTransposed` does over
 * the dequantized weight: without an act-order permutation the results are bit-identical to
 * dequantizing and multiplying. With one, the input columns are permuted once per call to the
 * stored order, so the sum runs in that order (equal up to float64 rounding before the final
 * float32 rounding).
 */
export function quantizedMatmul(x: Float32Array, rows: number, w: QuantizedWeight, bias: Float32Array | null, out: Float32Array): void {
  const { cols, perm } = w;
  const input = perm === null ? x : permuteColumns(x, rows, cols, perm);
  const row = new Float32Array(cols);
  const outDim = w.rows;
  for (let o = 0; o < outDim; o++) {
    decodeRow(w, o, row);
    const b = bias === null ? 0 : bias[o];
    let r = 0;
    // Four input rows per pass share every weight load.
    for (; r + 4 <= rows; r += 4) {
      const xa = r * cols;
      const xb = xa + cols;
      const xc = xb + cols;
      const xd = xc + cols;
      let a = 0, bb = 0, c = 0, d = 0;
      for (let k = 0; k < cols; k++) {
        const v = row[k];
        a += input[xa + k] * v;
        bb += input[xb + k] * v;
        c += input[xc + k] * v;
        d += input[xd + k] * v;
      }
      out[r * outDim + o] = a + b;
      out[(r + 1) * outDim + o] = bb + b;
      out[(r + 2) * outDim + o] = c + b;
      out[(r + 3) * outDim + o] = d + b;
    }
    for (; r < rows; r++) {
      const xa = r * cols;
      let a = 0;
      for (let k = 0; k < cols; k++) a += input[xa + k] * row[k];
      out[r * outDim + o] = a + b;
    }
  }
}

/** x[:, perm]: stored column j of the weight multiplies input column perm[j]. */
function permuteColumns(x: Float32Array, rows: number, cols: number, perm: Int32Array): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const at = r * cols;
    for (let j = 0; j < cols; j++) out[at + j] = x[at + perm[j]];
  }
  return out;
}
