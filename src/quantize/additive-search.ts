import { AQLM_GROUP } from '../tensor/quantized-weight.ts';

/**
 * AQLM's optimisation of additive codes (Egiazarian et al. 2024, "Extreme Compression of LLMs via
 * Additive Quantization"), on the output error of one linear layer:
 *
 *   f = Σ_r ρ_r · e_rᵀ H e_r,   e_r = x_r − Σ_m C_m[codes_m(r, g)] over the groups g of 8 columns,
 *
 * x the weight rows (vq.ts divides each by its RMS), ρ_r the row's weight (its RMS², so f is the
 * error of the unnormalized row), H = XᵀX of the calibration inputs (I without calibration). The
 * codes and the codebooks are improved in turn, each step never increasing f:
 *
 * - `searchCodes`: for each row and each group in order, the others fixed, a beam search over the M
 *   codebooks: from the current codes, codebook m's code of every beam entry is replaced by each of
 *   the K codes, and the `beam` best distinct code tuples go on to codebook m + 1 (each entry is
 *   among its own replacements, so the best never gets worse than the current codes). A tuple's
 *   cost is exact: the group's vector y changes f by yᵀH_gg y − 2yᵀu + const, u = H_gg v + (He)_g
 *   for the current vector v, and He is kept current as the row's codes change.
 * - `updateCodebooks`: the codes fixed, each codebook vector in turn (block coordinate descent)
 *   moves by the least-squares step δ = A⁻¹b, A = Σ ρ_r H_gg' over the pairs of groups of a row
 *   that use it, b = Σ ρ_r (He_r)_g: the exact minimum along that vector (A damped by 10⁻⁶ of its
 *   mean diagonal, which keeps the step a descent).
 */
export interface AdditiveProblem {
  /** Rows to code [rows, cols]. */
  x: Float64Array;
  rows: number;
  cols: number;
  /** ρ_r [rows]. */
  rowWeights: Float64Array;
  /** H [cols, cols], symmetric positive semi-definite. */
  hessian: Float64Array;
}

/** M codebooks of K vectors of 8 [M, K, 8], and codes[m][r · groups + g]. */
export interface AdditiveCodes {
  books: Float64Array;
  size: number;
  codes: Int32Array[];
}

const D = AQLM_GROUP;
const DAMP = 1e-6;

/** f for these codes and codebooks. */
export function additiveObjective(p: AdditiveProblem, c: AdditiveCodes): number {
  let f = 0;
  const e = new Float64Array(p.cols);
  for (let r = 0; r < p.rows; r++) {
    rowError(p, c, r, e);
    const he = timesHessian(p, e);
    let q = 0;
    for (let i = 0; i < p.cols; i++) q += e[i] * he[i];
    f += p.rowWeights[r] * q;
  }
  return f;
}

/** One pass of beam search over every row's groups (codes updated in place). */
export function searchCodes(p: AdditiveProblem, c: AdditiveCodes, beam: number): void {
  const { cols } = p;
  const groups = cols / D;
  const M = c.codes.length;
  const K = c.size;
  const blocks = diagonalBlocks(p);
  // vᵀH_gg v of every codebook vector, per group.
  const selfCost = new Float64Array(groups * M * K);
  for (let g = 0; g < groups; g++) {
    for (let v = 0; v < M * K; v++) selfCost[g * M * K + v] = quadratic(blocks, g * D * D, c.books, v * D);
  }
  const e = new Float64Array(cols);
  const v = new Float64Array(D);
  const u = new Float64Array(D);
  const q = new Float64Array(D);
  const z = new Float64Array(D);
  const delta = new Float64Array(D);
  // Beam entries (codes and vector sum) and the candidates that replace them.
  let entries = Array.from({ length: beam }, () => ({ codes: new Int32Array(M), sum: new Float64Array(D), cost: 0 }));
  let next = Array.from({ length: beam }, () => ({ codes: new Int32Array(M), sum: new Float64Array(D), cost: 0 }));
  const fromEntry = new Int32Array(beam);
  const newCode = new Int32Array(beam);
  for (let r = 0; r < p.rows; r++) {
    rowError(p, c, r, e);
    const he = timesHessian(p, e);
    for (let g = 0; g < groups; g++) {
      const at = r * groups + g;
      const hb = g * D * D;
      v.fill(0);
      for (let m = 0; m < M; m++) for (let j = 0; j < D; j++) v[j] += c.books[(m * K + c.codes[m][at]) * D + j];
      for (let i = 0; i < D; i++) {
        let s = he[g * D + i];
        for (let j = 0; j < D; j++) s += blocks[hb + i * D + j] * v[j];
        u[i] = s;
      }
      let count = 1;
      for (let m = 0; m < M; m++) entries[0].codes[m] = c.codes[m][at];
      entries[0].sum.set(v);
      for (let m = 0; m < M; m++) {
        let kept = 0;
        for (let b = 0; b < count; b++) {
          const entry = entries[b];
          const old = (m * K + entry.codes[m]) * D;
          for (let j = 0; j < D; j++) q[j] = entry.sum[j] - c.books[old + j];
          // cost(q + c) = qHq − 2q·u + cHc + 2c·(Hq − u)
          let base = 0;
          for (let i = 0; i < D; i++) {
            let s = 0;
            for (let j = 0; j < D; j++) s += blocks[hb + i * D + j] * q[j];
            base += q[i] * (s - 2 * u[i]);
            z[i] = 2 * (s - u[i]);
          }
          const self = g * M * K + m * K;
          for (let k = 0; k < K; k++) {
            const o = (m * K + k) * D;
            const cost = base + selfCost[self + k] + c.books[o] * z[0] + c.books[o + 1] * z[1] + c.books[o + 2] * z[2] + c.books[o + 3] * z[3] + c.books[o + 4] * z[4] + c.books[o + 5] * z[5] + c.books[o + 6] * z[6] + c.books[o + 7] * z[7];
            if (kept === beam && cost >= next[kept - 1].cost) continue;
            if (duplicate(entries, fromEntry, newCode, kept, entry.codes, m, k)) continue;
            // Insertion into the kept candidates, sorted by cost.
            let i = kept < beam ? kept++ : kept - 1;
            const spare = next[i];
            for (; i > 0 && next[i - 1].cost > cost; i--) {
              next[i] = next[i - 1];
              fromEntry[i] = fromEntry[i - 1];
              newCode[i] = newCode[i - 1];
            }
            next[i] = spare;
            spare.cost = cost;
            fromEntry[i] = b;
            newCode[i] = k;
          }
        }
        for (let i = 0; i < kept; i++) {
          const from = entries[fromEntry[i]];
          const to = next[i];
          to.codes.set(from.codes);
          to.codes[m] = newCode[i];
          const [o, n] = [(m * K + from.codes[m]) * D, (m * K + newCode[i]) * D];
          for (let j = 0; j < D; j++) to.sum[j] = from.sum[j] - c.books[o + j] + c.books[n + j];
        }
        [entries, next] = [next, entries];
        count = kept;
      }
      const best = entries[0];
      let changed = false;
      for (let m = 0; m < M; m++) {
        if (c.codes[m][at] !== best.codes[m]) changed = true;
        c.codes[m][at] = best.codes[m];
      }
      if (!changed) continue;
      for (let j = 0; j < D; j++) {
        delta[j] = best.sum[j] - v[j];
        e[g * D + j] -= delta[j];
      }
      subtractColumns(p.hessian, cols, g, delta, he);
    }
  }
}

/**
 * Whether the tuple of `codes` with codebook m's code set to k is already among the kept
 * candidates (two beam entries that differ only in code m give the same tuples).
 */
function duplicate(entries: { codes: Int32Array }[], fromEntry: Int32Array, newCode: Int32Array, count: number, codes: Int32Array, m: number, k: number): boolean {
  for (let i = 0; i < count; i++) {
    if (newCode[i] !== k) continue;
    const other = entries[fromEntry[i]].codes;
    let same = true;
    for (let j = 0; j < codes.length && same; j++) if (j !== m && other[j] !== codes[j]) same = false;
    if (same) return true;
  }
  return false;
}

/** One block-coordinate least-squares sweep over every codebook vector (books updated in place). */
export function updateCodebooks(p: AdditiveProblem, c: AdditiveCodes): void {
  const { rows, cols } = p;
  const groups = cols / D;
  const M = c.codes.length;
  const K = c.size;
  const n = rows * groups;
  // He of every row, kept current as the vectors move.
  const he = new Float64Array(rows * cols);
  const e = new Float64Array(cols);
  for (let r = 0; r < rows; r++) {
    rowError(p, c, r, e);
    he.set(timesHessian(p, e), r * cols);
  }
  const a = new Float64Array(D * D);
  const b = new Float64Array(D);
  const delta = new Float64Array(D);
  for (let m = 0; m < M; m++) {
    // The groups using each code, by code then row then group (a counting sort).
    const start = new Int32Array(K + 1);
    for (let i = 0; i < n; i++) start[c.codes[m][i] + 1]++;
    for (let k = 0; k < K; k++) start[k + 1] += start[k];
    const order = new Int32Array(n);
    const fill = start.slice(0, K);
    for (let i = 0; i < n; i++) order[fill[c.codes[m][i]]++] = i;
    for (let k = 0; k < K; k++) {
      if (start[k] === start[k + 1]) continue;
      a.fill(0);
      b.fill(0);
      for (let s = start[k]; s < start[k + 1]; ) {
        // The groups of one row, [s, end).
        const r = Math.floor(order[s] / groups);
        let end = s;
        while (end < start[k + 1] && Math.floor(order[end] / groups) === r) end++;
        const w = p.rowWeights[r];
        for (let i = s; i < end; i++) {
          const gi = order[i] % groups;
          for (let j = 0; j < D; j++) b[j] += w * he[r * cols + gi * D + j];
          for (let l = s; l < end; l++) {
            const gl = order[l] % groups;
            for (let x = 0; x < D; x++) for (let y = 0; y < D; y++) a[x * D + y] += w * p.hessian[(gi * D + x) * cols + gl * D + y];
          }
        }
        s = end;
      }
      if (!solveDamped(a, b, delta)) continue;
      for (let j = 0; j < D; j++) c.books[(m * K + k) * D + j] += delta[j];
      // Each use of the vector lowers its row's error by δ on its group.
      for (let s = start[k]; s < start[k + 1]; s++) {
        const r = Math.floor(order[s] / groups);
        subtractColumns(p.hessian, cols, order[s] % groups, delta, he.subarray(r * cols, (r + 1) * cols));
      }
    }
  }
}

/** e = x_r − the row's decoded vectors. */
function rowError(p: AdditiveProblem, c: AdditiveCodes, r: number, e: Float64Array): void {
  const groups = p.cols / D;
  for (let i = 0; i < p.cols; i++) e[i] = p.x[r * p.cols + i];
  for (let m = 0; m < c.codes.length; m++) {
    for (let g = 0; g < groups; g++) {
      const o = (m * c.size + c.codes[m][r * groups + g]) * D;
      for (let j = 0; j < D; j++) e[g * D + j] -= c.books[o + j];
    }
  }
}

function timesHessian(p: AdditiveProblem, e: Float64Array): Float64Array {
  const out = new Float64Array(p.cols);
  for (let i = 0; i < p.cols; i++) {
    let s = 0;
    const row = i * p.cols;
    for (let j = 0; j < p.cols; j++) s += p.hessian[row + j] * e[j];
    out[i] = s;
  }
  return out;
}

/** he −= H[:, 8g .. 8g + 8] δ (the error of group g fell by δ). */
function subtractColumns(h: Float64Array, cols: number, g: number, delta: Float64Array, he: Float64Array): void {
  const d0 = delta[0], d1 = delta[1], d2 = delta[2], d3 = delta[3], d4 = delta[4], d5 = delta[5], d6 = delta[6], d7 = delta[7];
  for (let i = 0, o = g * D; i < cols; i++, o += cols) {
    he[i] -= h[o] * d0 + h[o + 1] * d1 + h[o + 2] * d2 + h[o + 3] * d3 + h[o + 4] * d4 + h[o + 5] * d5 + h[o + 6] * d6 + h[o + 7] * d7;
  }
}

/** The 8 × 8 blocks H_gg on H's diagonal [groups, 8, 8]. */
function diagonalBlocks(p: AdditiveProblem): Float64Array {
  const groups = p.cols / D;
  const out = new Float64Array(groups * D * D);
  for (let g = 0; g < groups; g++) for (let i = 0; i < D; i++) for (let j = 0; j < D; j++) out[g * D * D + i * D + j] = p.hessian[(g * D + i) * p.cols + g * D + j];
  return out;
}

/** vᵀ B v, B the 8 × 8 block at `at`, v the 8 values at `v0`. */
function quadratic(blocks: Float64Array, at: number, values: Float64Array, v0: number): number {
  let s = 0;
  for (let i = 0; i < D; i++) {
    let t = 0;
    for (let j = 0; j < D; j++) t += blocks[at + i * D + j] * values[v0 + j];
    s += values[v0 + i] * t;
  }
  return s;
}

/**
 * δ = (A + λI)⁻¹ b by Cholesky, λ = DAMP · mean diag(A); false (no step) when A is zero or the
 * factorization fails.
 */
function solveDamped(a: Float64Array, b: Float64Array, out: Float64Array): boolean {
  let trace = 0;
  for (let i = 0; i < D; i++) trace += a[i * D + i];
  if (!(trace > 0)) return false;
  const l = a.slice();
  for (let i = 0; i < D; i++) l[i * D + i] += (DAMP * trace) / D;
  for (let j = 0; j < D; j++) {
    let s = l[j * D + j];
    for (let k = 0; k < j; k++) s -= l[j * D + k] ** 2;
    if (!(s > 0)) return false;
    const d = Math.sqrt(s);
    l[j * D + j] = d;
    for (let i = j + 1; i < D; i++) {
      let t = l[i * D + j];
      for (let k = 0; k < j; k++) t -= l[i * D + k] * l[j * D + k];
      l[i * D + j] = t / d;
    }
  }
  for (let i = 0; i < D; i++) {
    let s = b[i];
    for (let k = 0; k < i; k++) s -= l[i * D + k] * out[k];
    out[i] = s / l[i * D + i];
  }
  for (let i = D - 1; i >= 0; i--) {
    let s = out[i];
    for (let k = i + 1; k < D; k++) s -= l[k * D + i] * out[k];
    out[i] = s / l[i * D + i];
  }
  return true;
}
