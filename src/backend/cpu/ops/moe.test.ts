import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Activation } from '../../backend.ts';
import { TestRandom, testSeed } from '../../../../test/helpers/cpu-random.ts';
import { gatedValue } from './activation.ts';
import { dequantizeMxfp4, gatherMxfp4Rows, quantizeMxfp4 } from '../../../tensor/mxfp4.ts';
import { addGatedRows, expertMlpRows, routeTokens, type CpuExperts, type CpuRoutingParams } from './moe.ts';
import { selectionMargin } from './selection-margin.ts';

const random = new TestRandom(testSeed('cpu moe'));

const PLAIN: CpuRoutingParams = { topK: 2, scoring: 'softmax', selectionBias: null, groups: null, normalize: false, scale: 1 };

function route(logits: number[], params: Partial<CpuRoutingParams>) {
  const r = routeTokens(Float32Array.from(logits), 1, logits.length, { ...PLAIN, ...params });
  return { experts: [...r.experts], weights: [...r.weights] };
}

function assertWeights(actual: number[], expected: number[]): void {
  assert.equal(actual.length, expected.length);
  actual.forEach((w, i) => assert.ok(Math.abs(w - expected[i]) < 1e-6, `weight ${i}: ${w} vs ${expected[i]}`));
}

const softmax = (v: number[]) => {
  const e = v.map((x) => Math.exp(x - Math.max(...v)));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / s);
};
const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

test('softmax routing (Qwen2-MoE): the top-k probabilities as they are, listed in expert order', () => {
  const logits = [1, 3, 0.5, 2];
  const p = softmax(logits);
  const r = route(logits, {});
  assert.deepEqual(r.experts, [1, 3]);
  assertWeights(r.weights, [p[1], p[3]]);
});

test('normalized softmax routing (Mixtral, Qwen3-MoE): the chosen probabilities sum to 1, then the scale multiplies', () => {
  const logits = [1, 3, 0.5, 2];
  const p = softmax(logits);
  assertWeights(route(logits, { normalize: true }).weights, [p[1] / (p[1] + p[3]), p[3] / (p[1] + p[3])]);
  assertWeights(route(logits, { normalize: true, scale: 2.5 }).weights, [(2.5 * p[1]) / (p[1] + p[3]), (2.5 * p[3]) / (p[1] + p[3])]);
});

test('topk-softmax routing (gpt-oss): the top-k logits, then a softmax over those k only', () => {
  const logits = [0.2, -1, 4, 3.5, 1];
  const r = route(logits, { scoring: 'topk-softmax', topK: 3 });
  assert.deepEqual(r.experts, [2, 3, 4]);
  assertWeights(r.weights, softmax([4, 3.5, 1]));
});

test('sigmoid routing with a selection bias (DeepSeek-V3): the bias picks the experts, the unbiased scores weigh them', () => {
  const logits = [2, 1, 0, -1];
  const bias = Float32Array.of(0, 0, 0.9, 0);
  // Choice scores: σ(2) = 0.881, σ(1) = 0.731, σ(0) + 0.9 = 1.4, σ(-1) = 0.269: experts 0 and 2.
  const r = route(logits, { scoring: 'sigmoid', selectionBias: bias, normalize: true, scale: 2 });
  assert.deepEqual(r.experts, [0, 2]);
  const [a, b] = [sigmoid(2), sigmoid(0)];
  assertWeights(r.weights, [(2 * a) / (a + b + 1e-20), (2 * b) / (a + b + 1e-20)]);
});

test('group-limited choice by the sum of each group\'s two best (DeepSeek-V3) can pass over the single best expert', () => {
  // Groups of 3; the best expert (3, logit 3) sits in a group whose other members are weak.
  const logits = [2, 1.9, -3, 3, -3, -3, 1.8, 1.7, 1.6];
  const groups = { numGroups: 3, topkGroups: 2, score: 'top2-sum' as const };
  const r = route(logits, { scoring: 'sigmoid', groups, topK: 2 });
  // Group sums of σ: g0 = σ(2) + σ(1.9) = 1.75, g1 = σ(3) + σ(-3) = 1.0, g2 = σ(1.8) + σ(1.7) = 1.70: g0 and g2 kept.
  assert.deepEqual(r.experts, [0, 1]);
  assertWeights(r.weights, [sigmoid(2), sigmoid(1.9)]);
  // By the best member alone (DeepSeek-V2's group_limited_greedy), group 1 wins with expert 3.
  const byMax = route(logits, { groups: { ...groups, score: 'max', topkGroups: 1 }, topK: 2 });
  const p = softmax(logits);
  assert.deepEqual(byMax.experts, [3, 4]);
  assertWeights(byMax.weights, [p[3], p[4]]);
});

test('each token\'s closest call is reported: its experts\' margin, or its groups\' where that is smaller', () => {
  const margins: [number, number][] = [];
  const logits = [1, 2, 1.98, -1, /* token 1 */ 0, 3, -2, 1];
  routeTokens(Float32Array.from(logits), 2, 4, { ...PLAIN, topK: 1 }, (t, margin) => margins.push([t, margin]));
  assert.deepEqual(margins.map(([t]) => t), [0, 1]);
  margins.forEach(([t, margin]) => assert.ok(Math.abs(margin - selectionMargin(softmax(logits.slice(4 * t, 4 * t + 4).map(Math.fround)), 1)) < 1e-12, `token ${t}`));
  // Groups of 2 by their best member: groups 0 and 1 at 2 and 1.98, far closer than experts 1 and 0 within group 0.
  const grouped: number[] = [];
  routeTokens(Float32Array.of(1, 2, 1.98, -1), 1, 4, { ...PLAIN, scoring: 'topk-softmax', topK: 1, groups: { numGroups: 2, topkGroups: 1, score: 'max' } }, (_, m) => grouped.push(m));
  assert.ok(Math.abs(grouped[0] - selectionMargin([2, Math.fround(1.98)], 1)) < 1e-12, `groups' margin ${grouped[0]}`);
});

test('a logit soft-cap (Laguna) scores cap · tanh(logit / cap): the order kept, the weights flattened', () => {
  const logits = [6, 1, -2, 3];
  const capped = logits.map((v) => 2 * Math.tanh(v / 2));
  const r = route(logits, { scoring: 'sigmoid', normalize: true, logitSoftcap: 2 });
  assert.deepEqual(r.experts, [0, 3]);
  const [a, b] = [sigmoid(capped[0]), sigmoid(capped[3])];
  assertWeights(r.weights, [a / (a + b), b / (a + b)]);
});

test('ties go to the lower expert id, for experts and for groups', () => {
  assert.deepEqual(route([1, 2, 2, 2], {}).experts, [1, 2]);
  const groups = { numGroups: 2, topkGroups: 1, score: 'max' as const };
  assert.deepEqual(route([5, 0, 0, 5], { groups }).experts, [0, 1]);
});

/**
 * The routing rules restated as properties, checked on random logits: ids distinct and increasing;
 * every chosen expert in a kept group; no candidate left out scores above a chosen one; the kept
 * groups score at least as well as the dropped ones; weights follow from the unbiased scores.
 */
test('random routings satisfy the definition for every scoring, bias, grouping and normalization', () => {
  for (let trial = 0; trial < 300; trial++) {
    const numGroups = random.pick([1, 2, 4]);
    const numExperts = numGroups * random.int(2, 8);
    const topkGroups = random.int(1, numGroups);
    const grouped = numGroups > 1 && random.int(0, 1) === 1;
    const groupSize = numExperts / numGroups;
    const topK = random.int(1, Math.min(8, grouped ? topkGroups * groupSize : numExperts));
    const scoring = random.pick(['softmax', 'sigmoid', 'topk-softmax'] as const);
    const selectionBias = random.int(0, 1) === 1 ? random.floats(numExperts, 0.5) : null;
    const groups = grouped ? { numGroups, topkGroups, score: random.pick(['max', 'top2-sum'] as const) } : null;
    const params: CpuRoutingParams = { topK, scoring, selectionBias, groups, normalize: random.int(0, 1) === 1, scale: random.uniform(0.5, 3) };
    const logits = random.floats(numExperts, 3);
    const { experts, weights } = routeTokens(logits, 1, numExperts, params);
    const ids = [...experts];
    ids.forEach((e, i) => i > 0 && assert.ok(e > ids[i - 1], `ids ${ids} increase`));

    const scores = scoring === 'softmax' ? softmax([...logits]) : scoring === 'sigmoid' ? [...logits].map(sigmoid) : [...logits];
    const choice = scores.map((s, e) => s + (selectionBias?.[e] ?? 0));
    const groupOf = (e: number) => (groups === null ? 0 : Math.floor(e / groupSize));
    const groupScore = (g: number) => {
      const members = choice.filter((_, e) => groupOf(e) === g).sort((a, b) => b - a);
      return groups?.score === 'top2-sum' ? members[0] + members[1] : members[0];
    };
    const groupCount = groups === null ? 1 : numGroups;
    const ranked = Array.from({ length: groupCount }, (_, g) => g).sort((a, b) => groupScore(b) - groupScore(a) || a - b);
    const kept = new Set(ranked.slice(0, groups === null ? 1 : topkGroups));
    for (const e of ids) assert.ok(kept.has(groupOf(e)), `expert ${e} is outside the kept groups`);
    const worstChosen = Math.min(...ids.map((e) => choice[e]));
    for (let e = 0; e < numExperts; e++) {
      if (!ids.includes(e) && kept.has(groupOf(e))) assert.ok(choice[e] <= worstChosen, `expert ${e} left out`);
    }
    let expected = ids.map((e) => scores[e]);
    if (scoring === 'topk-softmax') expected = softmax(ids.map((e) => logits[e]));
    const sum = params.normalize ? expected.reduce((a, b) => a + b, 0) + 1e-20 : 1;
    assertWeights([...weights], expected.map((w) => (w / sum) * params.scale));
  }
});

/** CpuExperts with float32 matrices. */
type DenseExperts = CpuExperts & { gateUp: Float32Array; down: Float32Array };

function randomExperts(numExperts: number, hidden: number, n: number, biased: boolean): DenseExperts {
  return {
    first: 0,
    count: numExperts,
    n,
    hidden,
    gateUp: random.floats(numExperts * 2 * n * hidden, 1 / Math.sqrt(hidden)),
    down: random.floats(numExperts * hidden * n, 1 / Math.sqrt(n)),
    gateUpBias: biased ? random.floats(numExperts * 2 * n, 0.2) : null,
    downBias: biased ? random.floats(numExperts * hidden, 0.2) : null,
  };
}

/** The expert MLP by its definition, one token and one chosen expert at a time, in float64; `weightInputs`: expert(w · x) (Llama 4). */
function naiveExpertMlp(x: Float32Array, numTokens: number, experts: Int32Array, weights: Float32Array, topK: number, w: DenseExperts, activation: Activation, weightInputs = false): Float64Array {
  const { n, hidden } = w;
  const out = new Float64Array(numTokens * hidden);
  for (let t = 0; t < numTokens; t++) {
    for (let s = 0; s < topK; s++) {
      const local = experts[t * topK + s] - w.first;
      if (local < 0 || local >= w.count) continue;
      const [inWeight, outWeight] = weightInputs ? [weights[t * topK + s], 1] : [1, weights[t * topK + s]];
      const h = new Float64Array(n);
      for (let j = 0; j < n; j++) {
        let g = w.gateUpBias?.[local * 2 * n + j] ?? 0;
        let u = w.gateUpBias?.[local * 2 * n + n + j] ?? 0;
        for (let i = 0; i < hidden; i++) {
          g += w.gateUp[(local * 2 * n + j) * hidden + i] * inWeight * x[t * hidden + i];
          u += w.gateUp[(local * 2 * n + n + j) * hidden + i] * inWeight * x[t * hidden + i];
        }
        h[j] = gatedValue(activation, g, u);
      }
      for (let i = 0; i < hidden; i++) {
        let y = w.downBias?.[local * hidden + i] ?? 0;
        for (let j = 0; j < n; j++) y += w.down[(local * hidden + i) * n + j] * h[j];
        out[t * hidden + i] += outWeight * y;
      }
    }
  }
  return out;
}

const ACTIVATIONS: Activation[] = [{ kind: 'silu' }, { kind: 'gelu-tanh' }, { kind: 'clamped-swiglu', alpha: 1.702, limit: 7 }];

test('expertMlpRows equals the per-token definition for every activation, with and without biases', () => {
  for (let trial = 0; trial < 12; trial++) {
    const numExperts = random.int(2, 9);
    const topK = random.int(1, Math.min(4, numExperts));
    const [numTokens, hidden, n] = [random.int(1, 12), random.int(1, 24), random.int(1, 20)];
    const experts = randomExperts(numExperts, hidden, n, trial % 2 === 1);
    const activation = ACTIVATIONS[trial % 3];
    const routes = routeTokens(random.floats(numTokens * numExperts, 2), numTokens, numExperts, { ...PLAIN, topK });
    const x = random.floats(numTokens * hidden, 2);
    const out = new Float32Array(numTokens * hidden);
    expertMlpRows(x, numTokens, routes, topK, experts, activation, out);
    const expected = naiveExpertMlp(x, numTokens, routes.experts, routes.weights, topK, experts, activation);
    out.forEach((v, i) => assert.ok(Math.abs(v - expected[i]) <= 1e-5 * Math.max(1, Math.abs(expected[i])), `[${i}] ${v} vs ${expected[i]}`));
  }
});

test('routes that weight the inputs (Llama 4) run each expert on w · x and add its output unweighted', () => {
  for (let trial = 0; trial < 6; trial++) {
    const numExperts = random.int(2, 6);
    const topK = random.int(1, Math.min(2, numExperts));
    const [numTokens, hidden, n] = [random.int(1, 10), random.int(2, 20), random.int(2, 16)];
    const experts = randomExperts(numExperts, hidden, n, false);
    const routes = routeTokens(random.floats(numTokens * numExperts, 2), numTokens, numExperts, { ...PLAIN, topK, scoring: 'sigmoid', weightInputs: true });
    assert.ok(routes.weightInputs);
    const x = random.floats(numTokens * hidden, 2);
    const out = new Float32Array(numTokens * hidden);
    expertMlpRows(x, numTokens, routes, topK, experts, { kind: 'silu' }, out);
    const expected = naiveExpertMlp(x, numTokens, routes.experts, routes.weights, topK, experts, { kind: 'silu' }, true);
    out.forEach((v, i) => assert.ok(Math.abs(v - expected[i]) <= 1e-5 * Math.max(1, Math.abs(expected[i])), `[${i}] ${v} vs ${expected[i]}`));
    // Through the nonlinearity the two placements differ.
    const outputWeighted = naiveExpertMlp(x, numTokens, routes.experts, routes.weights, topK, experts, { kind: 'silu' });
    assert.ok(outputWeighted.some((v, i) => Math.abs(v - expected[i]) > 1e-4));
  }
});

test('experts sharded over devices: each shard adds only its own experts, and the shards sum to the whole', () => {
  const [numExperts, topK, numTokens, hidden, n] = [8, 3, 10, 16, 12];
  const experts = randomExperts(numExperts, hidden, n, true);
  const routes = routeTokens(random.floats(numTokens * numExperts, 2), numTokens, numExperts, { ...PLAIN, topK });
  const x = random.floats(numTokens * hidden, 2);
  const whole = new Float32Array(numTokens * hidden);
  expertMlpRows(x, numTokens, routes, topK, experts, { kind: 'silu' }, whole);
  const shard = (first: number, count: number): DenseExperts => ({
    first,
    count,
    n,
    hidden,
    gateUp: experts.gateUp.slice(first * 2 * n * hidden, (first + count) * 2 * n * hidden),
    down: experts.down.slice(first * hidden * n, (first + count) * hidden * n),
    gateUpBias: experts.gateUpBias!.slice(first * 2 * n, (first + count) * 2 * n),
    downBias: experts.downBias!.slice(first * hidden, (first + count) * hidden),
  });
  const parts = [shard(0, 3), shard(3, 5)].map((s) => {
    const out = new Float32Array(numTokens * hidden);
    expertMlpRows(x, numTokens, routes, topK, s, { kind: 'silu' }, out);
    const expected = naiveExpertMlp(x, numTokens, routes.experts, routes.weights, topK, s, { kind: 'silu' });
    out.forEach((v, i) => assert.ok(Math.abs(v - expected[i]) <= 1e-5 * Math.max(1, Math.abs(expected[i])), `shard [${i}]`));
    return out;
  });
  whole.forEach((v, i) => assert.ok(Math.abs(v - (parts[0][i] + parts[1][i])) <= 1e-5 * Math.max(1, Math.abs(v)), `sum [${i}]`));
});

test('addGatedRows adds σ(gate) times each row, or the rows as they are without a gate', () => {
  const target = Float32Array.of(1, 2, 3, 4);
  addGatedRows(target, Float32Array.of(10, 20, 30, 40), Float32Array.of(0, Math.log(3)), 2, 2);
  assertWeights([...target], [6, 12, 3 + 22.5, 4 + 30]);
  addGatedRows(target, Float32Array.of(1, 1, 1, 1), null, 2, 2);
  assertWeights([...target], [7, 13, 26.5, 35]);
});

test('MXFP4 experts multiply exactly as their dequantized weights do, sharded or not', () => {
  const [numExperts, topK, numTokens, hidden, n] = [6, 2, 7, 64, 32];
  const dense = randomExperts(numExperts, hidden, n, true);
  const gateUp = quantizeMxfp4(dense.gateUp, [numExperts, 2 * n, hidden]);
  const down = quantizeMxfp4(dense.down, [numExperts, hidden, n]);
  const routes = routeTokens(random.floats(numTokens * numExperts, 2), numTokens, numExperts, { ...PLAIN, topK });
  const x = random.floats(numTokens * hidden, 2);
  for (const [first, count] of [[0, numExperts], [2, 3]]) {
    const packed = { ...dense, first, count, gateUp: gatherMxfp4Rows(gateUp, range(first, count), range(0, 2 * n)), down: gatherMxfp4Rows(down, range(first, count), range(0, hidden)) };
    const decoded = { ...packed, gateUp: dequantizeMxfp4(packed.gateUp), down: dequantizeMxfp4(packed.down), gateUpBias: dense.gateUpBias!.slice(first * 2 * n, (first + count) * 2 * n), downBias: dense.downBias!.slice(first * hidden, (first + count) * hidden) };
    const [actual, expected] = [new Float32Array(numTokens * hidden), new Float32Array(numTokens * hidden)];
    expertMlpRows(x, numTokens, routes, topK, { ...packed, gateUpBias: decoded.gateUpBias, downBias: decoded.downBias }, { kind: 'clamped-swiglu', alpha: 1.702, limit: 7 }, actual);
    expertMlpRows(x, numTokens, routes, topK, decoded, { kind: 'clamped-swiglu', alpha: 1.702, limit: 7 }, expected);
    assert.deepEqual(actual, expected, `experts ${first}..${first + count - 1}`);
    assert.ok(expected.some((v) => v !== 0));
  }
});

function range(start: number, count: number): number[] {
  return Array.from({ length: count }, (_, i) => start + i);
}
