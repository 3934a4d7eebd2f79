/**
 * out[r, o] = dot(x[r, :], w[o, :]) + bias[o]: x [rows, inDim], w [outDim, inDim] (a linear
 * layer's weight as stored), out [rows, outDim]. Each dot product accumulates in float64 in
 * increasing k order and is rounded to float32 once, so a row's result does not depend on which
 * other rows share the call (a prompt in one step and in chunks give identical outputs).
 *
 * Tiles of 4 input rows x 4 weight rows share every load: each x value feeds 4 products and each
 * weight value 4 more, and the 4 weight rows stay in L1 while the input rows stream past them.
 * Leftover rows and columns fall back to 1 x 4 and 1 x 1 tiles with the same summation order.
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
  let o = 0;
  for (; o + 4 <= outDim; o += 4) {
    const w0 = o * inDim;
    const w1 = w0 + inDim;
    const w2 = w1 + inDim;
    const w3 = w2 + inDim;
    let r = 0;
    for (; r + 4 <= rows; r += 4) {
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
      store4(out, r * outDim + o, a0, a1, a2, a3, bias, o);
      store4(out, (r + 1) * outDim + o, b0, b1, b2, b3, bias, o);
      store4(out, (r + 2) * outDim + o, c0, c1, c2, c3, bias, o);
      store4(out, (r + 3) * outDim + o, d0, d1, d2, d3, bias, o);
    }
    for (; r < rows; r++) {
      const xa = r * inDim;
      let a0 = 0, a1 = 0, a2 = 0, a3 = 0;
      for (let k = 0; k < inDim; k++) {
        const p = x[xa + k];
        a0 += p * w[w0 + k]; a1 += p * w[w1 + k]; a2 += p * w[w2 + k]; a3 += p * w[w3 + k];
      }
      store4(out, r * outDim + o, a0, a1, a2, a3, bias, o);
    }
  }
  for (; o < outDim; o++) {
    const w0 = o * inDim;
    const b = bias === null ? 0 : bias[o];
    for (let r = 0; r < rows; r++) {
      const xa = r * inDim;
      let a = 0;
      for (let k = 0; k < inDim; k++) a += x[xa + k] * w[w0 + k];
      out[r * outDim + o] = a + b;
    }
  }
}

function store4(
  out: Float32Array,
  at: number,
  s0: number,
  s1: number,
  s2: number,
  s3: number,
  bias: Float32Array | null,
  o: number,
): void {
  if (bias === null) {
    out[at] = s0; out[at + 1] = s1; out[at + 2] = s2; out[at + 3] = s3;
  } else {
    out[at] = s0 + bias[o]; out[at + 1] = s1 + bias[o + 1]; out[at + 2] = s2 + bias[o + 2]; out[at + 3] = s3 + bias[o + 3];
  }
}
