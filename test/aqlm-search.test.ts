import assert from 'node:assert/strict';
import { test } from 'node:test';
import { additiveObjective, searchCodes, updateCodebooks, type AdditiveCodes, type AdditiveProblem } from '../src/quantize/additive-search.ts';
import { VQ_DEFAULTS, vqQuantize } from '../src/quantize/vq.ts';
import { dequantizeWeight } from '../src/tensor/quantized-weight.ts';
import { TestRandom, testSeed } from './helpers/cpu-random.ts';

const random = new TestRandom(testSeed('aqlm search'));
const gauss = () => Math.sqrt(-2 * Math.log(1 - random.uniform(0, 1))) * Math.cos(2 * Math.PI * random.uniform(0, 1));

/**
 * XᵀX of n inputs whose channels differ in scale (gains e^±spread) and share a common component
 * (its weight `shared`), as a layer's do.
 */
function correlatedHessian(n: number, cols: number, shared = 0.6, spread = 1.5): Float64Array {
  const gain = Float64Array.from({ length: cols }, () => Math.exp(random.uniform(-spread, spread)));
  const h = new Float64Array(cols * cols);
  const x = new Float64Array(cols);
  for (let t = 0; t < n; t++) {
    const common = gauss();
    for (let c = 0; c < cols; c++) x[c] = gain[c] * (shared * common + gauss());
    for (let i = 0; i < cols; i++) for (let j = 0; j < cols; j++) h[i * cols + j] += x[i] * x[j];
  }
  return h;
}

function randomCodes(count: number, n: number, size: number): Int32Array[] {
  return Array.from({ length: count }, () => Int32Array.from({ length: n }, () => Math.floor(random.uniform(0, size))));
}

test('AQLM rounds on a random layer: neither the beam search nor the codebook update ever increases the output error, and together they lower it', () => {
  const [rows, cols, size] = [48, 64, 256];
  const groups = cols / 8;
  const p: AdditiveProblem = {
    x: Float64Array.from({ length: rows * cols }, gauss),
    rows,
    cols,
    rowWeights: Float64Array.from({ length: rows }, () => random.uniform(0.5, 2)),
    hessian: correlatedHessian(256, cols),
  };
  const c: AdditiveCodes = { books: Float64Array.from({ length: 2 * size * 8 }, () => 0.7 * gauss()), size, codes: randomCodes(2, rows * groups, size) };
  const objectives = [additiveObjective(p, c)];
  for (let round = 0; round < 4; round++) {
    searchCodes(p, c, 4);
    objectives.push(additiveObjective(p, c));
    updateCodebooks(p, c);
    objectives.push(additiveObjective(p, c));
  }
  for (let i = 1; i < objectives.length; i++) assert.ok(objectives[i] <= objectives[i - 1] * (1 + 1e-12), `step ${i}: ${objectives[i - 1]} → ${objectives[i]}`);
  assert.ok(objectives.at(-1)! < 0.5 * objectives[0], `${objectives[0]} → ${objectives.at(-1)}`);
});

test('the beam search finds the planted codes of a weight built from the codebooks, from random codes, in one pass', () => {
  const [rows, cols, size] = [64, 64, 256];
  const groups = cols / 8;
  // A first codebook and a smaller second one for what it leaves, as k-means starts them.
  const books = Float64Array.from({ length: 2 * size * 8 }, (_, i) => gauss() * (i < size * 8 ? 1 : 0.1));
  const planted = randomCodes(2, rows * groups, size);
  const x = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let g = 0; g < groups; g++) for (let m = 0; m < 2; m++) for (let j = 0; j < 8; j++) x[r * cols + g * 8 + j] += books[(m * size + planted[m][r * groups + g]) * 8 + j];
  }
  // Correlated columns within each group of 8, none across groups: each vector's best codes do not
  // depend on the others' (across groups the search is a descent, not exact: the test above).
  const hessian = correlatedHessian(256, cols, 0.6, 0.5);
  for (let i = 0; i < cols; i++) for (let j = 0; j < cols; j++) if (Math.floor(i / 8) !== Math.floor(j / 8)) hessian[i * cols + j] = 0;
  const p: AdditiveProblem = { x, rows, cols, rowWeights: Float64Array.from({ length: rows }, () => random.uniform(0.5, 2)), hessian };
  const c: AdditiveCodes = { books, size, codes: randomCodes(2, rows * groups, size) };
  const start = additiveObjective(p, c);
  searchCodes(p, c, 8);
  for (let m = 0; m < 2; m++) assert.deepEqual(c.codes[m], planted[m], `codebook ${m}`);
  assert.ok(additiveObjective(p, c) < 1e-12 * start);
});

test('vq 2x8 with calibration: AQLM rounds leave a lower output error than the k-means they start from', () => {
  const [rows, cols] = [64, 128];
  const hessian = correlatedHessian(512, cols);
  const w = Float64Array.from({ length: rows * cols }, gauss);
  const error = (approx: Float32Array) => {
    let f = 0;
    for (let r = 0; r < rows; r++) {
      for (let i = 0; i < cols; i++) {
        let s = 0;
        for (let j = 0; j < cols; j++) s += hessian[i * cols + j] * (w[r * cols + j] - approx[r * cols + j]);
        f += (w[r * cols + i] - approx[r * cols + i]) * s;
      }
    }
    return f;
  };
  const kmeans = error(dequantizeWeight(vqQuantize(w, rows, cols, { format: 'aqlm-2x8', ...VQ_DEFAULTS, rounds: 0, hessian })));
  const aqlm = error(dequantizeWeight(vqQuantize(w, rows, cols, { format: 'aqlm-2x8', ...VQ_DEFAULTS, hessian })));
  assert.ok(aqlm < 0.8 * kmeans, `AQLM ${aqlm} vs k-means ${kmeans}`);
});
