import type { Activation, ExpertRouting, RoutingParams } from '../../backend.ts';
import { decodeMxfp4, isMxfp4, type Mxfp4Weight } from '../../../tensor/mxfp4.ts';
import { decodeRow, rowPerm, type QuantizedWeight } from '../../../tensor/quantized-weight.ts';
import { gatedActivation } from './activation.ts';
import { matmulTransposed } from './matmul.ts';
import { selectionMargin } from './selection-margin.ts';

/** RoutingParams with the selection bias as host values. */
export interface CpuRoutingParams extends Omit<RoutingParams, 'selectionBias'> {
  selectionBias: Float32Array | null;
}

/** Each token's topK experts, in increasing id order, and their weights: [numTokens * topK] each. */
export interface TokenRoutes {
  experts: Int32Array;
  weights: Float32Array;
  /** The weights scale the experts' inputs, not their outputs (RoutingParams.weightInputs). */
  weightInputs: boolean;
}

/** The CPU backend's ExpertRouting: the routes as host arrays. */
export class CpuExpertRouting implements ExpertRouting {
  readonly numTokens: number;
  readonly topK: number;
  readonly numExperts: number;
  readonly routes: TokenRoutes;

  constructor(numTokens: number, topK: number, numExperts: number, routes: TokenRoutes) {
    this.numTokens = numTokens;
    this.topK = topK;
    this.numExperts = numExperts;
    this.routes = routes;
  }
}

/**
 * The router's choice for every token of logits [numTokens, numExperts], as transformers makes it
 * (docs/oracle-fixtures.md): scores (softmax, sigmoid, or the logits themselves for topk-softmax),
 * plus the selection bias to choose; if grouped, only experts of the best-scoring groups are
 * candidates; the top k candidates (ties to the lower id); their unbiased scores (a softmax over
 * the chosen logits for topk-softmax) as weights, normalized if asked, times the scale. Computed
 * in float64; the weights are rounded to float32 once. `onMargin` hears each token's closest choice
 * (the selectionMargin of its experts, or of its groups where that is smaller).
 */
export function routeTokens(logits: Float32Array, numTokens: number, numExperts: number, params: CpuRoutingParams, onMargin?: (token: number, margin: number) => void): TokenRoutes {
  const { topK } = params;
  const experts = new Int32Array(numTokens * topK);
  const weights = new Float32Array(numTokens * topK);
  const scores = new Float64Array(numExperts);
  const choice = new Float64Array(numExperts);
  const cap = params.logitSoftcap ?? null;
  for (let t = 0; t < numTokens; t++) {
    const logitsRow = logits.subarray(t * numExperts, (t + 1) * numExperts);
    // transformers soft-caps the float32 logits, rounding the capped values to float32.
    const row = cap === null ? logitsRow : logitsRow.map((v) => cap * Math.tanh(v / cap));
    scoreRow(row, params.scoring, scores);
    for (let e = 0; e < numExperts; e++) choice[e] = scores[e] + (params.selectionBias === null ? 0 : params.selectionBias[e]);
    const groupScores = params.groups === null ? null : keepBestGroups(choice, params.groups);
    // Margins are worked out only for a listener (the call's arguments are not evaluated without one).
    onMargin?.(t, Math.min(groupScores === null ? Infinity : selectionMargin(groupScores, params.groups!.topkGroups), selectionMargin(choice, topK)));
    const chosen = topIndices(choice, topK);
    const w = chosen.map((e) => scores[e]);
    if (params.scoring === 'topk-softmax') softmaxInPlace(w);
    const sum = params.normalize ? w.reduce((a, b) => a + b, 0) + 1e-20 : 1;
    const order = chosen.map((e, i) => ({ e, w: (w[i] / sum) * params.scale })).sort((a, b) => a.e - b.e);
    order.forEach(({ e, w: weight }, i) => {
      experts[t * topK + i] = e;
      weights[t * topK + i] = weight;
    });
  }
  return { experts, weights, weightInputs: params.weightInputs ?? false };
}

function scoreRow(row: Float32Array, scoring: RoutingParams['scoring'], out: Float64Array): void {
  if (scoring === 'sigmoid') {
    for (let e = 0; e < row.length; e++) out[e] = 1 / (1 + Math.exp(-row[e]));
  } else if (scoring === 'softmax') {
    let max = -Infinity;
    for (let e = 0; e < row.length; e++) max = Math.max(max, row[e]);
    let sum = 0;
    for (let e = 0; e < row.length; e++) sum += out[e] = Math.exp(row[e] - max);
    for (let e = 0; e < row.length; e++) out[e] /= sum;
  } else {
    for (let e = 0; e < row.length; e++) out[e] = row[e];
  }
}

/** Sets the choice of every expert outside the `topkGroups` best groups to -Infinity; returns the groups' scores. */
function keepBestGroups(choice: Float64Array, groups: NonNullable<RoutingParams['groups']>): number[] {
  const size = choice.length / groups.numGroups;
  const groupScores = Array.from({ length: groups.numGroups }, (_, g) => {
    const members = Array.from(choice.subarray(g * size, (g + 1) * size)).sort((a, b) => b - a);
    return groups.score === 'max' ? members[0] : members[0] + members[1];
  });
  const kept = new Set(topIndices(Float64Array.from(groupScores), groups.topkGroups));
  for (let e = 0; e < choice.length; e++) if (!kept.has(Math.floor(e / size))) choice[e] = -Infinity;
  return groupScores;
}

/** Indices of the k largest values, best first; ties go to the lower index. */
function topIndices(values: Float64Array, k: number): number[] {
  const order = Array.from(values.keys()).sort((a, b) => values[b] - values[a] || a - b);
  return order.slice(0, k);
}

function softmaxInPlace(v: number[]): void {
  const max = Math.max(...v);
  let sum = 0;
  for (let i = 0; i < v.length; i++) sum += v[i] = Math.exp(v[i] - max);
  for (let i = 0; i < v.length; i++) v[i] /= sum;
}

/** An expert matrix stack [count, rows, cols]: float32 values, or MXFP4, or int4/int8/fp8 stacked along its rows (act-order: a permutation per expert). */
export type CpuExpertMatrix = Float32Array | Mxfp4Weight | QuantizedWeight;

/** ExpertWeights as float32 host arrays, the matrices possibly packed in MXFP4 or int4/int8/fp8. */
export interface CpuExperts {
  first: number;
  count: number;
  /** Intermediate width of one expert. */
  n: number;
  hidden: number;
  /** [count, 2n, hidden], [count, hidden, n], [count, 2n] or null, [count, hidden] or null. */
  gateUp: CpuExpertMatrix;
  down: CpuExpertMatrix;
  gateUpBias: Float32Array | null;
  downBias: Float32Array | null;
}

/**
 * out [numTokens, hidden] = Σ over each token's experts held here of weight · down(act(gateUp(x))),
 * or of down(act(gateUp(weight · x))) when the routes weight the inputs (Llama 4: x · weight
 * rounded to float32, as transformers scales the expert's input row).
 * transformers' order, so float32 sums round alike: experts in increasing id, each expert's
 * gate/up product and activation, its down product, the product scaled by the routing weight and
 * rounded, then added to the token's float32 sum. An MXFP4 or quantized expert is decoded before
 * its products (each value as dequantizeWeight rounds it), so it multiplies as its dequantized
 * weights do, bit for bit.
 */
export function expertMlpRows(x: Float32Array, numTokens: number, routes: TokenRoutes, topK: number, experts: CpuExperts, activation: Activation, out: Float32Array): void {
  const { n, hidden } = experts;
  for (let local = 0; local < experts.count; local++) {
    const expert = experts.first + local;
    const slots: number[] = [];
    for (let s = 0; s < numTokens * topK; s++) if (routes.experts[s] === expert) slots.push(s);
    if (slots.length === 0) continue;
    const rows = slots.length;
    const xs = new Float32Array(rows * hidden);
    slots.forEach((s, r) => xs.set(x.subarray(Math.floor(s / topK) * hidden, (Math.floor(s / topK) + 1) * hidden), r * hidden));
    if (routes.weightInputs) slots.forEach((s, r) => scaleRow(xs, r * hidden, hidden, routes.weights[s]));
    const gateUp = new Float32Array(rows * 2 * n);
    matmulTransposed(xs, rows, hidden, slice(experts.gateUp, local, 2 * n * hidden), 2 * n, experts.gateUpBias && slice(experts.gateUpBias, local, 2 * n), gateUp);
    const h = new Float32Array(rows * n);
    gatedActivation(activation, gateUp, rows, n, h);
    const y = new Float32Array(rows * hidden);
    matmulTransposed(h, rows, n, slice(experts.down, local, hidden * n), hidden, experts.downBias && slice(experts.downBias, local, hidden), y);
    slots.forEach((s, r) => {
      const at = Math.floor(s / topK) * hidden;
      const w = routes.weightInputs ? 1 : routes.weights[s];
      for (let i = 0; i < hidden; i++) out[at + i] += Math.fround(w * y[r * hidden + i]);
    });
  }
}

/** values[at .. at + length) *= w, each product rounded to float32. */
function scaleRow(values: Float32Array, at: number, length: number, w: number): void {
  for (let i = at; i < at + length; i++) values[i] = Math.fround(w * values[i]);
}

/** Expert `index`'s matrix of `size` values, as float32. */
function slice(values: CpuExpertMatrix, index: number, size: number): Float32Array {
  if (values instanceof Float32Array) return values.subarray(index * size, (index + 1) * size);
  const out = new Float32Array(size);
  if (isMxfp4(values)) {
    decodeMxfp4(values, index * size, size, out);
    return out;
  }
  // The expert's rows are a run of the stack's, each decoded then put in input column order (its
  // expert's act-order permutation), as dequantizeWeight places them.
  const { cols } = values;
  const rows = size / cols;
  const row = new Float32Array(cols);
  for (let r = 0; r < rows; r++) {
    const perm = rowPerm(values, index * rows + r);
    if (perm === null) {
      decodeRow(values, index * rows + r, out.subarray(r * cols, (r + 1) * cols));
      continue;
    }
    decodeRow(values, index * rows + r, row);
    for (let col = 0; col < cols; col++) out[r * cols + perm[col]] = row[col];
  }
  return out;
}

/** target [rows, cols] += σ(gate[r]) · x (or x when gate is null), the product rounded first as in float32 torch. */
export function addGatedRows(target: Float32Array, x: Float32Array, gate: Float32Array | null, rows: number, cols: number): void {
  for (let r = 0; r < rows; r++) {
    const g = gate === null ? 1 : Math.fround(1 / (1 + Math.exp(-gate[r])));
    for (let i = r * cols; i < (r + 1) * cols; i++) target[i] += Math.fround(g * x[i]);
  }
}
