/**
 * out[r, o] = dot(x[r, :], w[o, :]) + bias[o]: x [rows, inDim], w [outDim, inDim] (a linear
 * layer's weight as stored), out [rows, outDim]. Each dot product accumulates in float64 in
 * increasing k order, then adds the bias, and is rounded to float32 once, so a row's result does
 * not depend on which other rows share the call (a prompt in one step and in chunks give
 * identical outputs).
 */
export function matmulTransposed(
  x: Float32Array,
  rows: number,
  inDim: number,
  w: Float32Array,
  outDim: number,
  bias: Float32Array | null,
  out: Float32Array,
): void {
  const tiledRows = rows - (rows % 4);
  if (tiledRows > 0) matmulRowQuads(x, tiledRows, inDim, w, outDim, bias, out);
  for (let r = tiledRows; r < rows; r++) matvecRow(x, r, inDim, w, outDim, bias, out);
}

// Tiles of 4 input rows x 4 weight rows share every load: each x value feeds 4 products and each
// weight value 4 more, and the 4 weight rows stay in L1 while the input rows stream past them.
function matmulRowQuads(
  x: Float32Array,
  rows: number,
  inDim: number,
  w: Float32Array,
  outDim: number,
  bias: Float32Array | null,
  out: Float32Array,
): void {
  let o = 0;
  for (; o + 4 <= outDim; o += 4) {
    const w0 = o * inDim;
    const w1 = w0 + inDim;
    const w2 = w1 + inDim;
    const w3 = w2 + inDim;
    for (let r = 0; r < rows; r += 4) {
      const xa = r * inDim;
      const xb = xa + inDim;
      const xc = xb + inDim;
      const xd = xc + inDim;
      let a0 = 0, a1 = 0, a2 = 0, a3 = 0;
      let b0 = 0, b1 = 0, b2 = 0, b3 = 0;
      let c0 = 0, c1 = 0, c2 = 0, c3 = 0;
      let d0 = 0, d1 = 0, d2 = 0, d3 = 0;
      for (let k = 0; k < inDim; k++) {
        const v0 = w[w0 + k];
        const v1 = w[w1 + k];
        const v2 = w[w2 + k];
        const v3 = w[w3 + k];
        let p = x[xa + k];
        a0 += p * v0; a1 += p * v1; a2 += p * v2; a3 += p * v3;
        p = x[xb + k];
        b0 += p * v0; b1 += p * v1; b2 += p * v2; b3 += p * v3;
        p = x[xc + k];
        c0 += p * v0; c1 += p * v1; c2 += p * v2; c3 += p * v3;
        p = x[xd + k];
        d0 += p * v0; d1 += p * v1; d2 += p * v2; d3 += p * v3;
      }
      const e0 = biasOf(bias, o), e1 = biasOf(bias, o + 1), e2 = biasOf(bias, o + 2), e3 = biasOf(bias, o + 3);
      let at = r * outDim + o;
      out[at] = a0 + e0; out[at + 1] = a1 + e1; out[at + 2] = a2 + e2; out[at + 3] = a3 + e3;
      at += outDim;
      out[at] = b0 + e0; out[at + 1] = b1 + e1; out[at + 2] = b2 + e2; out[at + 3] = b3 + e3;
      at += outDim;
      out[at] = c0 + e0; out[at + 1] = c1 + e1; out[at + 2] = c2 + e2; out[at + 3] = c3 + e3;
      at += outDim;
      out[at] = d0 + e0; out[at + 1] = d1 + e1; out[at + 2] = d2 + e2; out[at + 3] = d3 + e3;
    }
  }
  for (; o < outDim; o++) {
    for (let r = 0; r < rows; r++) out[r * outDim + o] = dotRows(x, r * inDim, w, o * inDim, inDim) + biasOf(bias, o);
  }
}

// One input row (every decode): 8 weight rows per pass, 8 independent sums in flight. Measured
// ~15% faster than 4 per pass for the decode step's GEMVs.
function matvecRow(
  x: Float32Array,
  r: number,
  inDim: number,
  w: Float32Array,
  outDim: number,
  bias: Float32Array | null,
  out: Float32Array,
): void {
  const xa = r * inDim;
  const outAt = r * outDim;
  let o = 0;
  for (; o + 8 <= outDim; o += 8) {
    const w0 = o * inDim;
    const w1 = w0 + inDim;
    const w2 = w1 + inDim;
    const w3 = w2 + inDim;
    const w4 = w3 + inDim;
    const w5 = w4 + inDim;
    const w6 = w5 + inDim;
    const w7 = w6 + inDim;
    let a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
    for (let k = 0; k < inDim; k++) {
      const p = x[xa + k];
      a0 += p * w[w0 + k]; a1 += p * w[w1 + k]; a2 += p * w[w2 + k]; a3 += p * w[w3 + k];
      a4 += p * w[w4 + k]; a5 += p * w[w5 + k]; a6 += p * w[w6 + k]; a7 += p * w[w7 + k];
    }
    const at = outAt + o;
    out[at] = a0 + biasOf(bias, o); out[at + 1] = a1 + biasOf(bias, o + 1);
    out[at + 2] = a2 + biasOf(bias, o + 2); out[at + 3] = a3 + biasOf(bias, o + 3);
    out[at + 4] = a4 + biasOf(bias, o + 4); out[at + 5] = a5 + biasOf(bias, o + 5);
    out[at + 6] = a6 + biasOf(bias, o + 6); out[at + 7] = a7 + biasOf(bias, o + 7);
  }
  for (; o < outDim; o++) out[outAt + o] = dotRows(x, xa, w, o * inDim, inDim) + biasOf(bias, o);
}

function dotRows(x: Float32Array, xAt: number, w: Float32Array, wAt: number, n: number): number {
  let s = 0;
  for (let k = 0; k < n; k++) s += x[xAt + k] * w[wAt + k];
  return s;
}

function biasOf(bias: Float32Array | null, o: number): number {
  return bias === null ? 0 : bias[o];
}
