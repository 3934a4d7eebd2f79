import { emptyAqlmWeight, putAqlmCodes } from '../tensor/aqlm.ts';
import { AQLM_GROUP, aqlmLayout, dequantizeWeight, type AqlmFormat, type QuantizedWeight } from '../tensor/quantized-weight.ts';
import { seededRng } from '../tensor/seeded-rng.ts';
import { toFloat16 } from './group-quantizer.ts';

/**
 * `keel quantize --method vq`: a weight [rows, cols] coded in AQLM's layout by plain k-means, a
 * first step that is NOT AQLM's method (no beam search over codes, no calibration data, no
 * fine-tuning of codebooks or scales):
 *
 * 1. each row is divided by its RMS, and cut into vectors of 8 consecutive columns;
 * 2. 1×16: k-means with 65536 centres (when the layer has no more vectors than that, every vector
 *    is its own centre); 2×8: k-means with 256 centres, then k-means of the residuals for the second
 *    codebook, then REFINE_ROUNDS rounds re-fitting each codebook (Lloyd's iterations from its
 *    centres) on what the other leaves;
 * 3. the codebooks are rounded to float16, as stored, and each row's scale is refitted by least
 *    squares against the row those codes decode to (then rounded to float16).
 *
 * Deterministic for a seed (centres start at distinct vectors drawn by a seeded generator).
 */
export interface VqOptions {
  format: AqlmFormat;
  /** Lloyd's iterations per k-means (fewer when the codes stop changing). */
  iterations: number;
  seed: number;
}

export const VQ_DEFAULTS = { iterations: 20, seed: 1 };
const REFINE_ROUNDS = 2;

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
  const books = new Float32Array(codebooks * size * AQLM_GROUP);
  const codes = Array.from({ length: codebooks }, () => new Int32Array(n));
  if (codebooks === 1) {
    books.set(kmeans(x, n, size, o.iterations, rng, codes[0]));
  } else {
    const target = new Float32Array(x.length);
    const fit = (book: number, others: number, fresh: boolean) => {
      const other = books.subarray(others * size * AQLM_GROUP, (others + 1) * size * AQLM_GROUP);
      for (let i = 0; i < n; i++) for (let j = 0; j < AQLM_GROUP; j++) target[i * AQLM_GROUP + j] = x[i * AQLM_GROUP + j] - (fresh ? 0 : other[codes[others][i] * AQLM_GROUP + j]);
      const start = fresh ? null : books.slice(book * size * AQLM_GROUP, (book + 1) * size * AQLM_GROUP);
      books.set(kmeans(target, n, size, o.iterations, rng, codes[book], start), book * size * AQLM_GROUP);
    };
    fit(0, 1, true);
    fit(1, 0, false);
    for (let round = 0; round < REFINE_ROUNDS; round++) {
      fit(0, 1, false);
      fit(1, 0, false);
    }
  }
  for (let i = 0; i < books.length; i++) books[i] = toFloat16(books[i]);
  const q = emptyAqlmWeight(o.format, rows, cols, books);
  for (let r = 0; r < rows; r++) {
    for (let g = 0; g < groups; g++) putAqlmCodes(q, r, g, codes.map((c) => c[r * groups + g]));
    q.scales[r] = 1;
  }
  // Least-squares scales against the rows the stored (float16) codebooks decode to.
  const unit = dequantizeWeight(q);
  for (let r = 0; r < rows; r++) {
    let dot = 0;
    let self = 0;
    for (let c = 0; c < cols; c++) {
      dot += w[r * cols + c] * unit[r * cols + c];
      self += unit[r * cols + c] ** 2;
    }
    q.scales[r] = toFloat16(self > 0 ? dot / self : 0);
  }
  return q;
}

/**
 * Lloyd's k-means of the n vectors of 8 in `x` with k centres (from `start`, or from k distinct
 * vectors drawn at random; with n ≤ k every vector is a centre): the centres [k, 8], each vector's
 * centre in `assign`. An emptied centre moves to a random vector.
 */
function kmeans(x: Float32Array, n: number, k: number, iterations: number, rng: () => number, assign: Int32Array, start: Float32Array | null = null): Float32Array {
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
  const counts = new Int32Array(k);
  const norms = new Float32Array(k);
  for (let it = 0; it <= iterations; it++) {
    for (let c = 0; c < k; c++) {
      let s = 0;
      for (let j = 0; j < d; j++) s += centres[c * d + j] ** 2;
      norms[c] = s;
    }
    let changed = 0;
    for (let i = 0; i < n; i++) {
      const o = i * d;
      const x0 = x[o], x1 = x[o + 1], x2 = x[o + 2], x3 = x[o + 3], x4 = x[o + 4], x5 = x[o + 5], x6 = x[o + 6], x7 = x[o + 7];
      let best = 0;
      let bestDistance = Infinity;
      // |x − c|² less |x|²: the same order of centres.
      for (let c = 0, p = 0; c < k; c++, p += d) {
        const dot = x0 * centres[p] + x1 * centres[p + 1] + x2 * centres[p + 2] + x3 * centres[p + 3] + x4 * centres[p + 4] + x5 * centres[p + 5] + x6 * centres[p + 6] + x7 * centres[p + 7];
        const distance = norms[c] - 2 * dot;
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
    counts.fill(0);
    for (let i = 0; i < n; i++) {
      const c = assign[i];
      counts[c]++;
      for (let j = 0; j < d; j++) sums[c * d + j] += x[i * d + j];
    }
    for (let c = 0; c < k; c++) {
      if (counts[c] === 0) {
        const v = Math.floor(rng() * n);
        centres.set(x.subarray(v * d, v * d + d), c * d);
      } else {
        for (let j = 0; j < d; j++) centres[c * d + j] = sums[c * d + j] / counts[c];
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
