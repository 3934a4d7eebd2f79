/**
 * out[r, o] = x[r, :] · W[o, :] + bias[o] for a 2:4 sparse W [outDim, inDim] kept compressed
 * (src/tensor/sparse24.ts): `values` [outDim, inDim / 2] in float32 and `meta` [outDim, inDim / 8].
 * Each dot product reads only the two kept columns of every group of 4, accumulates in float64 in
 * increasing column order, then adds the bias, and is rounded to float32 once: the columns it
 * skips hold zeros, whose products add exactly nothing, so the result equals the dense
 * matmulTransposed's over the expanded weight bit for bit.
 */
export function sparse24Matmul(
  x: Float32Array,
  rows: number,
  inDim: number,
  values: Float32Array,
  meta: Uint8Array,
  outDim: number,
  bias: Float32Array | null,
  out: Float32Array,
): void {
  const groups = inDim / 4;
  // Each output row's kept columns, decoded once for all input rows: [groups, 2] offsets into a row of x.
  const columns = new Int32Array(2 * groups);
  for (let o = 0; o < outDim; o++) {
    const metaAt = (o * inDim) / 8;
    for (let g = 0; g < groups; g++) {
      const bits = (meta[metaAt + (g >> 1)] >> ((g & 1) * 4)) & 0xf;
      columns[2 * g] = 4 * g + (bits & 3);
      columns[2 * g + 1] = 4 * g + (bits >> 2);
    }
    const valuesAt = o * groups * 2;
    const b = bias === null ? 0 : bias[o];
    for (let r = 0; r < rows; r++) {
      const xAt = r * inDim;
      let sum = 0;
      for (let i = 0; i < 2 * groups; i++) sum += x[xAt + columns[i]] * values[valuesAt + i];
      out[r * outDim + o] = sum + b;
    }
  }
}
