import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  applyMinP,
  applyPresenceFrequencyPenalties,
  applyRepetitionPenalty,
  applyTemperature,
  applyTopK,
  applyTopP,
  countTokens,
  logitsToWeights,
  maskTokens,
  maxLogit,
} from './logits-processors.ts';
import { forkStream, type Rng } from './rng.ts';

const row = (values: number[]) => Float32Array.from(values);
/** Logits whose softmax is exactly `probs` (up to float32 rounding). */
const fromProbs = (probs: number[]) => row(probs.map(Math.log));
const kept = (logits: Float32Array) => [...logits.keys()].filter((i) => logits[i] > -Infinity);
const nonZero = (weights: Float32Array) => [...weights.keys()].filter((i) => weights[i] > 0);

/** Runs top-p the way the sampler does: on the weights of the row. Returns the kept ids and mass. */
function topPOf(logits: Float32Array, p: number): { ids: number[]; keptMass: number; weights: Float32Array } {
  const weights = logits.slice();
  const keptMass = applyTopP(weights, logitsToWeights(weights), p);
  return { ids: nonZero(weights), keptMass, weights };
}

test('maxLogit and countTokens', () => {
  assert.equal(maxLogit(row([-3, 7.5, 2])), 7.5);
  assert.equal(maxLogit(row([-Infinity, -Infinity])), -Infinity);
  assert.deepEqual([...countTokens([5, 1, 5, 5])], [
    [5, 3],
    [1, 1],
  ]);
});

test('repetition penalty divides positive and multiplies negative logits, once per distinct token', () => {
  const logits = row([2, -1, 0.5, 3, -2, 0]);
  applyRepetitionPenalty(logits, 2, [0, 1, 1, 5], [1, 4, 4]);
  assert.deepEqual([...logits], [1, -2, 0.5, 3, -4, 0]);

  const reward = row([2, -1]);
  applyRepetitionPenalty(reward, 0.5, [0], [1]);
  assert.deepEqual([...reward], [4, -0.5], 'penalty < 1 favours repeated tokens');

  const untouched = row([2, -1]);
  applyRepetitionPenalty(untouched, 1, [0], [1]);
  assert.deepEqual([...untouched], [2, -1]);
});

test('presence and frequency penalties subtract presence + frequency * count for output tokens', () => {
  const logits = row([1, 1, 1, 1]);
  applyPresenceFrequencyPenalties(logits, 0.5, 0.25, new Map([
    [1, 1],
    [2, 3],
  ]));
  assert.deepEqual([...logits], [1, 1 - 0.5 - 0.25, 1 - 0.5 - 0.75, 1]);

  const negative = row([0, 0]);
  applyPresenceFrequencyPenalties(negative, -1, -0.5, new Map([[0, 2]]));
  assert.deepEqual([...negative], [2, 0], 'negative penalties favour repeated tokens');
});

test('maskTokens sets -Infinity', () => {
  const logits = row([1, 2, 3]);
  maskTokens(logits, [0, 2]);
  assert.deepEqual([...logits], [-Infinity, 2, -Infinity]);
});

test('temperature divides every logit', () => {
  const logits = row([2, -4, -Infinity]);
  applyTemperature(logits, 0.5);
  assert.deepEqual([...logits], [4, -8, -Infinity]);
});

test('top-k keeps the k largest, ties with the k-th included; 0, -1 and k >= vocab keep all', () => {
  const cases: [number[], number, number[]][] = [
    [[1, 5, 3, 5, 2], 2, [1, 3]],
    [[1, 5, 3, 5, 2], 3, [1, 2, 3]],
    [[1, 3, 3, 0], 1, [1, 2]],
    [[4, -1, 2, 8, 0, 7], 3, [0, 3, 5]],
    [[1, 2, 3], 0, [0, 1, 2]],
    [[1, 2, 3], -1, [0, 1, 2]],
    [[1, 2, 3], 3, [0, 1, 2]],
  ];
  for (const [values, k, expected] of cases) {
    const logits = row(values);
    applyTopK(logits, k);
    assert.deepEqual(kept(logits), expected, `top-${k} of ${values}`);
    for (const i of expected) assert.equal(logits[i], Math.fround(values[i]), 'kept logits are unchanged');
  }
});

test('logitsToWeights turns logits into exp(logit - max) and returns their sum', () => {
  const weights = row([0, Math.log(3), -Infinity, -200]);
  const total = logitsToWeights(weights);
  assert.ok(Math.abs(weights[0] - 1 / 3) < 1e-7);
  assert.deepEqual([...weights.subarray(1)], [1, 0, 0]);
  assert.equal(total, weights[0] + 1);
});

test('top-p keeps the smallest most-likely set reaching p, always the top token', () => {
  // probabilities by id: 0.15, 0.5, 0.05, 0.3
  const probs = [0.15, 0.5, 0.05, 0.3];
  const cases: [number, number[]][] = [
    [0.01, [1]],
    [0.45, [1]],
    [0.7, [1, 3]],
    [0.9, [0, 1, 3]],
    [0.99, [0, 1, 2, 3]],
    [1, [0, 1, 2, 3]],
  ];
  for (const [p, expected] of cases) {
    const { ids, keptMass, weights } = topPOf(fromProbs(probs), p);
    assert.deepEqual(ids, expected, `top-p ${p}`);
    assert.equal(keptMass, ids.reduce((sum, i) => sum + weights[i], 0));
  }
  assert.deepEqual(topPOf(row([2, 2, 0]), 0.3).ids, [0, 1], 'tokens tied with the last kept one stay');
});

test('min-p drops tokens below minP times the top probability', () => {
  const probs = [0.15, 0.5, 0.05, 0.3];
  const cases: [number, number[]][] = [
    [0, [0, 1, 2, 3]],
    [0.2, [0, 1, 3]],
    [0.5, [1, 3]],
    [1, [1]],
  ];
  for (const [minP, expected] of cases) {
    const logits = fromProbs(probs);
    applyMinP(logits, minP);
    assert.deepEqual(kept(logits), expected, `min-p ${minP}`);
  }
});

/** Plain references: a full softmax and a full sort, as the definitions read. */
function referenceKeepSets(values: Float32Array, k: number, p: number, minP: number) {
  const order = [...values.keys()].sort((a, b) => values[b] - values[a] || a - b);
  const topK = new Set(order.filter((i) => values[i] >= values[order[k - 1]]));
  const max = values[order[0]];
  // The sampler's weights are float32: logits a rounding apart can weigh the same there, a tie.
  const weights = [...Float32Array.from(values, (x) => Math.exp(x - max))];
  const total = weights.reduce((a, b) => a + b, 0);
  let cumulative = 0;
  let last = order[order.length - 1];
  for (const i of order) {
    cumulative += weights[i] / total;
    if (cumulative >= p) {
      last = i;
      break;
    }
  }
  const topP = new Set(order.filter((i) => weights[i] >= weights[last]));
  const minPSet = new Set(order.filter((i) => weights[i] >= minP));
  return { topK, topP, minP: minPSet };
}

function randomRow(rng: Rng, size: number): Float32Array {
  const scale = 1 + rng.nextFloat() * 8;
  // Integer-rounded logits make ties common, which is where keep-set rules differ most.
  const coarse = rng.nextFloat() < 0.3;
  return Float32Array.from({ length: size }, () => {
    const x = (rng.nextFloat() - 0.5) * scale;
    return coarse ? Math.round(x) : x;
  });
}

test('top-k, top-p and min-p match full-sort references on random rows', (t) => {
  const seed = Number(process.env.KEEL_TEST_SEED ?? Math.floor(Math.random() * 2 ** 32));
  t.diagnostic(`seed ${seed}`);
  const rng = forkStream(seed, 0);
  for (let trial = 0; trial < 300; trial++) {
    const size = 1 + Math.floor(rng.nextFloat() * 3000);
    const values = randomRow(rng, size);
    const k = 1 + Math.floor(rng.nextFloat() * size);
    const p = 0.05 + rng.nextFloat() * 0.9;
    const minP = rng.nextFloat() * 0.5;
    const expected = referenceKeepSets(values, k, p, minP);
    const label = `trial ${trial}: size ${size}, k ${k}, p ${p}, minP ${minP}`;

    const topK = values.slice();
    applyTopK(topK, k);
    assert.deepEqual(new Set(kept(topK)), expected.topK, `top-k, ${label}`);
    // The sampler sums float32 weights, the reference float64: where the running mass lands within
    // rounding of p, either side of the boundary token is right. The kept set grows with p, so it
    // must lie between the reference sets just below and just above p.
    const topP = new Set(topPOf(values, p).ids);
    const below = referenceKeepSets(values, k, p * (1 - 1e-6), minP).topP;
    const above = referenceKeepSets(values, k, p * (1 + 1e-6), minP).topP;
    assert.ok([...below].every((i) => topP.has(i)) && [...topP].every((i) => above.has(i)), `top-p, ${label}: kept ${topP.size}, reference ${expected.topP.size}`);
    const minPRow = values.slice();
    applyMinP(minPRow, minP);
    assert.deepEqual(new Set(kept(minPRow)), expected.minP, `min-p, ${label}`);
  }
});
