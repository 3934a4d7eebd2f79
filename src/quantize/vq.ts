import { emptyAqlmWeight, putAqlmCodes } from '../tensor/aqlm.ts';
import { AQLM_GROUP, aqlmLayout, dequantizeWeight, type AqlmFormat, type QuantizedWeight } from '../tensor/quantized-weight.ts';
import { seededRng } from '../tensor/seeded-rng.ts';
import { searchCodes, updateCodebooks, type AdditiveCodes, type AdditiveProblem } from './additive-search.ts';
import { toFloat16 } from './group-quantizer.ts';

/**
 * `keel quantize --method vq`: a weight [rows, cols] coded in AQLM's layout, by AQLM's alternating
 * optimisation of codes and codebooks (additive-search.ts) started from k-means:
 *
 * 1. each row is divided by its RMS, and cut into vectors of 8 consecutive columns;
 * 2. start: k-means minimizes Σ h_c (w − ŵ)² over the weights, where h_c is input column c's
 *    importance, the diagonal of the calibration inputs' XᵀX (1 without calibration); with the row
 *    normalization, a vector's dimension j weighs RMS(row)² · h_(8g + j). 1×16: k-means with 65536
 *    centres (when the layer has no more vectors than that, every vector is its own centre, which
 *    is exact, and step 3 is skipped); 2×8: k-means with 256 centres, then k-means of the
 *    residuals for the second codebook, then KMEANS_REFITS rounds re-fitting each codebook
 *    (Lloyd's iterations from its centres) on what the other leaves;
 * 3. `rounds` rounds, each a beam search (`beam` entries) for every vector's codes and a
 *    least-squares sweep over the codebook vectors, both on AQLM's objective: the layer's output
 *    error Σ_r RMS(row)² e_rᵀ XᵀX e_r with the full XᵀX (I without calibration);
 * 4. the codebooks are rounded to float16, as stored, and each row's scale is refitted by least
 *    squares on the same objective against the row its codes decode to (then rounded to float16).
 *
 * Deterministic for a seed (centres start at distinct vectors drawn by a seeded generator).
 */
export interface VqOptions {
  format: AqlmFormat;
  /** Lloyd's iterations per k-means (fewer when the codes stop changing). */
  iterations: number;
  seed: number;
  /** Rounds of beam search and codebook update after k-means (0: k-means alone). */
  rounds: number;
  /** Beam entries kept per codebook in the code search. */
  beam: number;
  /** The calibration inputs' XᵀX [cols, cols], or null for the identity. */
  hessian?: Float64Array | null;
}

export const VQ_DEFAULTS = { iterations: 20, seed: 1, rounds: 3, beam: 4 };
const KMEANS_REFITS = 2;

export function vqQuantize(w: ArrayLike<number>, rows: number, cols: number, o: VqOptions): QuantizedWeight {
  if (cols % AQLM_GROUP !== 0) throw new Error(`vq: ${cols} input columns are not a multiple of ${AQLM_GROUP}`);
  const { codebooks, size } = aqlmLayout(o.format);
  const groups = cols / AQLM_GROUP;
  const norms = new Float64Array(rows);
  const x = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    let sum = 0;
    for (let c = 0; c < cols; c++) sum += w[r * cols + c] ** 2;
    norms[r] = Math.sqrt(sum / cols) || 1;
    for (let c = 0; c < cols; c++) x[r * cols + c] = w[r * cols + c] / norms[r];
  }
  const rng = seededRng(o.seed);
  const n = rows * groups;
  const hessian = o.hessian ?? null;
  const h = hessian === null ? null : Float64Array.from({ length: cols }, (_, c) => hessian[c * cols + c]);
  const weights = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) weights[r * cols + c] = norms[r] ** 2 * (h === null ? 1 : Math.max(h[c], 1e-12));
  const books = new Float32Array(codebooks * size * AQLM_GROUP);
  const codes = Array.from({ length: codebooks }, () => new Int32Array(n));
  if (codebooks === 1) {
    books.set(kmeans(x, weights, n, size, o.iterations, rng, codes[0]));
  } else {
    const target = new Float32Array(x.length);
    const fit = (book: number, others: number, fresh: boolean) => {
      const other = books.subarray(others * size * AQLM_GROUP, (others + 1) * size * AQLM_GROUP);
      for (let i = 0; i < n; i++) for (let j = 0; j < AQLM_GROUP; j++) target[i * AQLM_GROUP + j] = x[i * AQLM_GROUP + j] - (fresh ? 0 : other[codes[others][i] * AQLM_GROUP + j]);
      const start = fresh ? null : books.slice(book * size * AQLM_GROUP, (book + 1) * size * AQLM_GROUP);
      books.set(kmeans(target, weights, n, size, o.iterations, rng, codes[book], start), book * size * AQLM_GROUP);
    };
    fit(0, 1, true);
    fit(1, 0, false);
    for (let round = 0; round < KMEANS_REFITS; round++) {
      fit(0, 1, false);
      fit(1, 0, false);
    }
  }
  if (o.rounds > 0 && n > size) {
    const problem: AdditiveProblem = { x: Float64Array.from(x), rows, cols, rowWeights: norms.map((v) => v * v), hessian: hessian ?? identity(cols) };
    const additive: AdditiveCodes = { books: Float64Array.from(books), size, codes };
    for (let round = 0; round < o.rounds; round++) {
      searchCodes(problem, additive, o.beam);
      updateCodebooks(problem, additive);
    }
    books.set(additive.books);
  }
  for (let i = 0; i < books.length; i++) books[i] = toFloat16(books[i]);
  const q = emptyAqlmWeight(o.format, rows, cols, books);
  for (let r = 0; r < rows; r++) {
    for (let g = 0; g < groups; g++) putAqlmCodes(q, r, g, codes.map((c) => c[r * groups + g]));
    q.scales[r] = 1;
  }
  // Least-squares scales on the output error, against the rows the stored (float16) codebooks decode to.
  const unit = dequantizeWeight(q);
  const hu = new Float64Array(cols);
  for (let r = 0; r < rows; r++) {
    const u = unit.subarray(r * cols, (r + 1) * cols);
    for (let i = 0; i < cols; i++) {
      if (hessian === null) {
        hu[i] = u[i];
        continue;
      }
      let s = 0;
      for (let j = 0; j < cols; j++) s += hessian[i * cols + j] * u[j];
      hu[i] = s;
    }
    let dot = 0;
    let self = 0;
    for (let c = 0; c < cols; c++) {
      dot += w[r * cols + c] * hu[c];
      self += u[c] * hu[c];
    }
    q.scales[r] = toFloat16(self > 0 ? dot / self : 0);
  }
  return q;
}

function identity(n: number): Float64Array {
  const out = new Float64Array(n * n);
  for (let i = 0; i < n; i++) out[i * n + i] = 1;
  return out;
}

/**
 * Lloyd's k-means of the n vectors of 8 in `x`, dimension j of vector i weighing weights[8i + j],
 * with k centres (from `start`, or from k distinct vectors drawn at random; with n ≤ k every vector
 * is a centre): the centres [k, 8], each vector's centre in `assign`. A centre's update is the
 * weighted mean of its vectors, per dimension; an emptied centre moves to a random vector.
 */
function kmeans(x: Float32Array, weights: Float32Array, n: number, k: number, iterations: number, rng: () => number, assign: Int32Array, start: Float32Array | null = null): Float32Array {
  const d = AQLM_GROUP;
  const centres = new Float32Array(k * d);
  if (n <= k) {
    // Every vector its own centre: exact, and no n × k distances to compute.
    centres.set(x.subarray(0, n * d));
    for (let i = 0; i < n; i++) assign[i] = i;
    return centres;
  }
  if (start !== null) centres.set(start);
  else for (const [i, v] of sampleDistinct(n, k, rng).entries()) centres.set(x.subarray(v * d, v * d + d), i * d);
  const sums = new Float64Array(k * d);
  const mass = new Float64Array(k * d);
  const counts = new Int32Array(k);
  for (let it = 0; it <= iterations; it++) {
    let changed = 0;
    for (let i = 0; i < n; i++) {
      const o = i * d;
      const w0 = weights[o], w1 = weights[o + 1], w2 = weights[o + 2], w3 = weights[o + 3], w4 = weights[o + 4], w5 = weights[o + 5], w6 = weights[o + 6], w7 = weights[o + 7];
      // Σ w (c − x)² less Σ w x² is Σ c (w c − 2 w x): the same order of centres.
      const a0 = 2 * w0 * x[o], a1 = 2 * w1 * x[o + 1], a2 = 2 * w2 * x[o + 2], a3 = 2 * w3 * x[o + 3], a4 = 2 * w4 * x[o + 4], a5 = 2 * w5 * x[o + 5], a6 = 2 * w6 * x[o + 6], a7 = 2 * w7 * x[o + 7];
      let best = 0;
      let bestDistance = Infinity;
      for (let c = 0, p = 0; c < k; c++, p += d) {
        const c0 = centres[p], c1 = centres[p + 1], c2 = centres[p + 2], c3 = centres[p + 3], c4 = centres[p + 4], c5 = centres[p + 5], c6 = centres[p + 6], c7 = centres[p + 7];
        const distance =
          c0 * (w0 * c0 - a0) + c1 * (w1 * c1 - a1) + c2 * (w2 * c2 - a2) + c3 * (w3 * c3 - a3) + c4 * (w4 * c4 - a4) + c5 * (w5 * c5 - a5) + c6 * (w6 * c6 - a6) + c7 * (w7 * c7 - a7);
        if (distance < bestDistance) {
          bestDistance = distance;
          best = c;
        }
      }
      if (assign[i] !== best) changed++;
      assign[i] = best;
    }
    // The last pass only assigns: the codes match the centres returned.
    if (it === iterations || (it > 0 && changed === 0)) break;
    sums.fill(0);
    mass.fill(0);
    counts.fill(0);
    for (let i = 0; i < n; i++) {
      const c = assign[i];
      counts[c]++;
      for (let j = 0; j < d; j++) {
        sums[c * d + j] += weights[i * d + j] * x[i * d + j];
        mass[c * d + j] += weights[i * d + j];
      }
    }
    for (let c = 0; c < k; c++) {
      if (counts[c] === 0) {
        const v = Math.floor(rng() * n);
        centres.set(x.subarray(v * d, v * d + d), c * d);
      } else {
        for (let j = 0; j < d; j++) centres[c * d + j] = sums[c * d + j] / mass[c * d + j];
      }
    }
  }
  return centres;
}

/** k distinct integers of [0, n), in random order. */
function sampleDistinct(n: number, k: number, rng: () => number): number[] {
  const chosen = new Set<number>();
  while (chosen.size < k) chosen.add(Math.floor(rng() * n));
  return [...chosen];
}
