import { invalidArgument } from '../errors.ts';
import { codeOf, emptyGroupQuantized, fitGrid, type GroupQuantized, type QuantizerOptions } from './group-quantizer.ts';

export interface GptqOptions extends QuantizerOptions {
  /** Columns per group; null for one group per row. */
  groupSize: number | null;
  /** Quantize columns in order of decreasing Hessian diagonal (`desc_act`), the groups following that order. */
  actOrder: boolean;
  /** Added to the Hessian's diagonal, as a fraction of its mean (GPTQ's percdamp, 0.01). */
  damp: number;
}

/**
 * GPTQ (Frantar et al., "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
 * Transformers", 2022). With H = XᵀX over the calibration inputs X [n, cols] of the layer, the
 * columns of W [rows, cols] are quantized one at a time; each column's rounding error, divided by
 * the diagonal of the upper Cholesky factor U of H⁻¹, is spread over the columns not yet quantized
 * along U's row (the optimal update of Optimal Brain Surgeon, restricted to the remaining
 * columns), so later columns compensate for earlier ones. Group grids are fitted when their first
 * column is reached, from the already-updated weights. A column no input ever reached (H_ii = 0)
 * is zeroed, its weight being unobservable.
 *
 * `w` is overwritten (it ends as the updated, not the quantized, weights).
 */
export function gptqQuantize(w: Float64Array, rows: number, cols: number, hessian: Float64Array, o: GptqOptions): GroupQuantized {
  const h = hessian.slice();
  for (let c = 0; c < cols; c++) {
    if (h[c * cols + c] === 0) {
      h[c * cols + c] = 1;
      for (let r = 0; r < rows; r++) w[r * cols + c] = 0;
    }
  }
  const order = columnOrder(Float64Array.from({ length: cols }, (_, c) => h[c * cols + c]), o.actOrder);
  const wp = new Float64Array(rows * cols);
  const hp = new Float64Array(cols * cols);
  for (let i = 0; i < cols; i++) {
    for (let r = 0; r < rows; r++) wp[r * cols + i] = w[r * cols + order[i]];
    for (let j = 0; j < cols; j++) hp[i * cols + j] = h[order[i] * cols + order[j]];
  }
  let meanDiagonal = 0;
  for (let i = 0; i < cols; i++) meanDiagonal += hp[i * cols + i] / cols;
  for (let i = 0; i < cols; i++) hp[i * cols + i] += o.damp * meanDiagonal;
  const u = upperCholeskyOfInverse(hp, cols);

  const size = o.groupSize ?? cols;
  const q = emptyGroupQuantized(rows, cols, o.bits, size);
  const groups = Math.ceil(cols / size);
  const grids = Array.from({ length: rows }, () => ({ scale: 1, zero: 0 }));
  const err = new Float64Array(rows);
  for (let i = 0; i < cols; i++) {
    const g = Math.floor(i / size);
    if (i % size === 0) {
      for (let r = 0; r < rows; r++) {
        grids[r] = fitGrid(wp, r * cols + i, r * cols + Math.min(cols, i + size), o);
        q.scales[r * groups + g] = grids[r].scale;
        q.zeros[r * groups + g] = grids[r].zero;
      }
    }
    const d = u[i * cols + i];
    for (let r = 0; r < rows; r++) {
      const value = wp[r * cols + i];
      const code = codeOf(value, grids[r], o.bits);
      q.codes[r * cols + order[i]] = code;
      err[r] = (value - grids[r].scale * (code - grids[r].zero)) / d;
    }
    // The error compensation: W[:, j] -= err · U[i, j] for the columns j > i still to come.
    for (let r = 0; r < rows; r++) {
      const e = err[r];
      if (e === 0) continue;
      const at = r * cols;
      for (let j = i + 1; j < cols; j++) wp[at + j] -= e * u[i * cols + j];
    }
    q.groupOf[order[i]] = g;
  }
  for (let i = 0; i < cols; i++) for (let r = 0; r < rows; r++) w[r * cols + order[i]] = wp[r * cols + i];
  return q;
}

/** The order GPTQ quantizes columns in: act-order's takes those with the largest activations (diagonal of H) first, ties by index. */
export function columnOrder(diagonal: Float64Array, actOrder: boolean): Int32Array {
  const order = Int32Array.from({ length: diagonal.length }, (_, i) => i);
  if (actOrder) order.sort((a, b) => diagonal[b] - diagonal[a] || a - b);
  return order;
}

/** H = XᵀX [cols, cols] of calibration inputs x [n, cols] (float64 sums; only the upper triangle is computed, then mirrored). */
export function hessianOf(x: Float32Array, n: number, cols: number): Float64Array {
  const h = new Float64Array(cols * cols);
  for (let t = 0; t < n; t++) {
    const at = t * cols;
    for (let i = 0; i < cols; i++) {
      const xi = x[at + i];
      if (xi === 0) continue;
      const row = i * cols;
      for (let j = i; j < cols; j++) h[row + j] += xi * x[at + j];
    }
  }
  for (let i = 0; i < cols; i++) for (let j = 0; j < i; j++) h[i * cols + j] = h[j * cols + i];
  return h;
}

/** U, upper triangular, with H⁻¹ = UᵀU, for H symmetric positive definite [n, n]. */
function upperCholeskyOfInverse(h: Float64Array, n: number): Float64Array {
  const inverse = inverseFromCholesky(lowerCholesky(h, n), n);
  // H⁻¹ = L' L'ᵀ; U = L'ᵀ.
  const l = lowerCholesky(inverse, n);
  const u = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j <= i; j++) u[j * n + i] = l[i * n + j];
  return u;
}

/** L lower triangular with A = L Lᵀ. */
function lowerCholesky(a: Float64Array, n: number): Float64Array {
  const l = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    let d = a[j * n + j];
    for (let k = 0; k < j; k++) d -= l[j * n + k] * l[j * n + k];
    if (!(d > 0)) throw invalidArgument('GPTQ: the damped Hessian is not positive definite (raise the damping, or give more calibration text)');
    const ljj = Math.sqrt(d);
    l[j * n + j] = ljj;
    for (let i = j + 1; i < n; i++) {
      let s = a[i * n + j];
      for (let k = 0; k < j; k++) s -= l[i * n + k] * l[j * n + k];
      l[i * n + j] = s / ljj;
    }
  }
  return l;
}

/** A⁻¹ from A's lower Cholesky factor: A⁻¹ = L⁻ᵀ L⁻¹. */
function inverseFromCholesky(l: Float64Array, n: number): Float64Array {
  // M = L⁻¹, lower triangular, by forward substitution column by column.
  const m = new Float64Array(n * n);
  for (let c = 0; c < n; c++) {
    m[c * n + c] = 1 / l[c * n + c];
    for (let i = c + 1; i < n; i++) {
      let s = 0;
      for (let k = c; k < i; k++) s += l[i * n + k] * m[k * n + c];
      m[i * n + c] = -s / l[i * n + i];
    }
  }
  // A⁻¹[i, j] = Σ_k M[k, i] M[k, j] over k ≥ max(i, j).
  const inv = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = i; j < n; j++) {
      let s = 0;
      for (let k = j; k < n; k++) s += m[k * n + i] * m[k * n + j];
      inv[i * n + j] = s;
      inv[j * n + i] = s;
    }
  }
  return inv;
}
