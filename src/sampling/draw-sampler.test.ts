import assert from 'node:assert/strict';
import { test } from 'node:test';
import { drawDistribution, sampleDraw, sampleDraws } from './draw-sampler.ts';
import { allowedMask, logitBias, penaltyEntries, testDraw } from '../../test/helpers/sampling-draw.ts';
import { DRAFT_HISTORY_COLUMNS, scoreDraw, type Draw } from './draw.ts';

const row = (values: number[]) => Float32Array.from(values);
const fromProbs = (probs: number[]) => row(probs.map(Math.log));
const NONE = new Int32Array(0);

const draw = testDraw;
const greedy = (fields: Partial<Draw> = {}) => draw({ temperature: 0, ...fields });
const penalties = penaltyEntries;

test('greedy takes the argmax, the lowest id among ties, and -1 when nothing is finite', () => {
  assert.equal(sampleDraw(row([1, 3, 3, 2]), greedy(), []).tokenId, 1);
  assert.equal(sampleDraw(row([-5, -1, -3]), greedy(), []).tokenId, 1);
  assert.equal(sampleDraw(row([-Infinity, NaN]), greedy(), []).tokenId, -1);
  assert.equal(sampleDraw(row([-Infinity, NaN]), draw(), []).tokenId, -1);
});

test('penalties apply before the argmax; the pending token counts as one more output token', () => {
  const logits = row([3, 2.9, -1]);
  assert.equal(sampleDraw(logits, greedy({ repetitionPenalty: 2, ...penalties([[0, 0]]) }), []).tokenId, 1, 'a prompt token');
  assert.equal(sampleDraw(logits, greedy({ presencePenalty: 0.5, ...penalties([[0, 1]]) }), []).tokenId, 1);
  assert.equal(sampleDraw(logits, greedy({ frequencyPenalty: 0.06, ...penalties([[0, 1]]) }), []).tokenId, 0, '3 - 0.06 > 2.9');
  assert.equal(sampleDraw(logits, greedy({ frequencyPenalty: 0.06, ...penalties([[0, 1]]) }), [0]).tokenId, 1, 'twice: 3 - 0.12 < 2.9');
  assert.equal(sampleDraw(logits, greedy({ presencePenalty: 0.5 }), [0]).tokenId, 1, 'a pending token not yet listed');
  // A negative logit is multiplied by the repetition penalty: -1 * 2 = -2, still the smallest.
  assert.equal(sampleDraw(row([-1, -1.5]), greedy({ repetitionPenalty: 2, ...penalties([[0, 0]]) }), []).tokenId, 1);
});

test('masked tokens are never drawn, even when they are penalized too', () => {
  const masked = { maskedTokenIds: Int32Array.of(1, 2) };
  assert.equal(sampleDraw(row([0, 5, 4, 1]), greedy(masked), []).tokenId, 3);
  assert.equal(sampleDraw(row([0, 5, 4, 1]), greedy({ ...masked, repetitionPenalty: 1.1, ...penalties([[1, 2]]) }), []).tokenId, 3);
  for (let seed = 0; seed < 200; seed++) assert.ok(![1, 2].includes(sampleDraw(row([0, 5, 4, 1]), draw({ ...masked, seed }), []).tokenId));
  assert.equal(sampleDraw(row([0, 1]), greedy({ maskedTokenIds: Int32Array.of(0, 1) }), []).tokenId, -1);
});

test('a logit bias flips the argmax; -100 bans a token and +100 forces one, at any temperature', () => {
  const logits = row([3, 2.5, -1, 0.5]);
  assert.equal(sampleDraw(logits, greedy(logitBias([[1, 0.75]])), []).tokenId, 1, '2.5 + 0.75 > 3');
  assert.equal(sampleDraw(logits, greedy(logitBias([[0, -0.75]])), []).tokenId, 1);
  for (let seed = 0; seed < 200; seed++) {
    assert.notEqual(sampleDraw(logits, draw({ seed, temperature: 1.5, ...logitBias([[0, -100], [1, -100], [3, -100]]) }), []).tokenId, 0, 'banned');
    assert.equal(sampleDraw(logits, draw({ seed, temperature: 1.5, ...logitBias([[2, 100]]) }), []).tokenId, 2, 'forced');
  }
});

test('a logit bias comes before the penalties, which treat a biased token like any other', () => {
  const logits = row([3, 2.9, -1]);
  // Repetition divides the biased logit: (3 + 1) / 2 = 2 < 2.9; penalizing first would give 3 / 2 + 1 = 2.5, the same winner, so presence shows the order.
  assert.equal(sampleDraw(logits, greedy({ repetitionPenalty: 2, ...penalties([[0, 0]]), ...logitBias([[0, 1]]) }), []).tokenId, 1);
  assert.equal(sampleDraw(logits, greedy({ presencePenalty: 0.5, ...penalties([[0, 1]]), ...logitBias([[0, 0.3]]) }), []).tokenId, 1, '3 + 0.3 - 0.5 < 2.9');
  assert.equal(sampleDraw(logits, greedy({ presencePenalty: 0.5, ...penalties([[0, 1]]), ...logitBias([[0, 0.7]]) }), []).tokenId, 0, '3 + 0.7 - 0.5 > 2.9');
  // A biased token the output holds only as the pending token: the penalty counts it all the same.
  assert.equal(sampleDraw(logits, greedy({ presencePenalty: 0.5, ...logitBias([[0, 0.3]]) }), [0]).tokenId, 1);
  // An unseen biased token: the repetition penalty leaves it alone (0.5 + 3 = 3.5 > 3 / 2).
  assert.equal(sampleDraw(row([3, 0.5]), greedy({ repetitionPenalty: 2, ...penalties([[0, 0]]), ...logitBias([[1, 3]]) }), []).tokenId, 1);
  assert.equal(sampleDraw(row([3, 0.5]), greedy({ repetitionPenalty: 2, ...penalties([[0, 0]]), ...logitBias([[1, 0.9]]) }), []).tokenId, 0, '1.4 < 1.5');
});

test('top-k, top-p and min-p truncate the biased values, and the logprobs stay raw', () => {
  const logits = fromProbs([0.1, 0.2, 0.3, 0.4]);
  const boosted = logitBias([[0, Math.log(8)]]); // token 0 becomes 0.8 against 0.2, 0.3, 0.4: the most likely
  const distribution = drawDistribution(logits, draw({ topK: 1, ...boosted }), []);
  assert.deepEqual([...distribution], [1, 0, 0, 0]);
  // Biased, token 0 holds 0.8 / 1.7 = 0.47 of the mass: enough for top-p 0.45 alone; unbiased, tokens 3 and 2 would be kept.
  assert.deepEqual([...drawDistribution(logits, draw({ topP: 0.45, ...boosted }), [])], [1, 0, 0, 0]);
  const minP = drawDistribution(logits, draw({ minP: 0.6, ...boosted }), []);
  assert.deepEqual([...minP], [1, 0, 0, 0], 'min-p 0.6 of the biased maximum 0.8 keeps token 0 alone');
  const outcome = sampleDraw(logits, draw({ topK: 1, topLogprobs: 2, ...boosted }), []);
  assert.equal(outcome.tokenId, 0);
  assert.ok(Math.abs(outcome.logprob - Math.log(0.1)) < 1e-6, 'the drawn token\'s raw logprob');
  assert.deepEqual(outcome.topIds, [3, 2], 'the raw ranking');
});

test('a logit bias and an allowed-token mask combine: the mask wins over a +100 bias', () => {
  const logits = row([0, 1, 2, 3]);
  const mask = { allowedTokens: allowedMask(4, [0, 1]) };
  assert.equal(sampleDraw(logits, greedy({ ...mask, ...logitBias([[3, 100], [0, 2]]) }), []).tokenId, 0);
  assert.equal(sampleDraw(logits, greedy({ ...mask, maskedTokenIds: Int32Array.of(0), ...logitBias([[0, 100]]) }), []).tokenId, 1, 'a masked token stays masked');
});

function frequencies(logits: Float32Array, fields: Partial<Draw>, draws: number): number[] {
  const counts = new Array<number>(logits.length).fill(0);
  for (let i = 0; i < draws; i++) counts[sampleDraw(logits, draw({ ...fields, seed: Math.imul(i, 2654435761) >>> 0 }), []).tokenId]++;
  return counts.map((c) => c / draws);
}

function assertClose(observed: number[], expected: number[], draws: number): void {
  expected.forEach((p, i) => {
    // Five standard errors: a false alarm is a one-in-a-million event.
    const tolerance = 5 * Math.sqrt((p * (1 - p)) / draws) + 1e-9;
    assert.ok(Math.abs(observed[i] - p) <= tolerance, `token ${i}: frequency ${observed[i]}, expected ${p} ± ${tolerance}`);
  });
}

test('over 20k seeds the draws follow softmax(logits / T), reshaped by top-k, top-p and min-p', () => {
  const probs = [0.1, 0.2, 0.3, 0.4];
  const draws = 20_000;
  assertClose(frequencies(fromProbs(probs), {}, draws), probs, draws);
  const squared = probs.map((p) => p * p);
  const squaredTotal = squared.reduce((a, b) => a + b, 0);
  assertClose(frequencies(fromProbs(probs), { temperature: 0.5 }, draws), squared.map((p) => p / squaredTotal), draws);
  assertClose(frequencies(fromProbs(probs), { topK: 2 }, draws), [0, 0, 3 / 7, 4 / 7], draws);
  assertClose(frequencies(fromProbs(probs), { topP: 0.8 }, draws), [0, 2 / 9, 3 / 9, 4 / 9], draws);
  assertClose(frequencies(fromProbs(probs), { minP: 0.6 }, draws), [0, 0, 3 / 7, 4 / 7], draws);
  // Top-p over what min-p and top-k kept: top-k 3 leaves 0.2/0.3/0.4, of which 0.7 of the mass is 0.3 + 0.4.
  assertClose(frequencies(fromProbs(probs), { topK: 3, topP: 0.7 }, draws), [0, 0, 3 / 7, 4 / 7], draws);
  assertClose(frequencies(row([1, 0.5, -Infinity, 0, NaN]), { temperature: 0.7 }, draws), normalized([1, 0.5, -Infinity, 0, -Infinity].map((l) => Math.exp(l / 0.7))), draws);
});

function normalized(weights: number[]): number[] {
  const total = weights.reduce((a, b) => a + b, 0);
  return weights.map((w) => w / total);
}

test('truncation keeps every token tied with the last one kept', () => {
  const tied = row([2, 2, 1, 0]);
  const draws = 4000;
  assertClose(frequencies(tied, { topK: 1 }, draws), [0.5, 0.5, 0, 0], draws);
  assertClose(frequencies(tied, { topP: 0.01 }, draws), [0.5, 0.5, 0, 0], draws);
});

test('a draw is a pure function of its seed, whatever else the pass draws', () => {
  const logits = Float32Array.from({ length: 1000 }, (_, i) => Math.sin(i * 12.9898) * 4);
  const fields = { topK: 100, topP: 0.9, temperature: 0.8 };
  const seeds = Array.from({ length: 50 }, (_, i) => i * 7919 + 3);
  const tokens = seeds.map((seed) => sampleDraw(logits, draw({ ...fields, seed }), []).tokenId);
  const batch = [logits, logits].flatMap((_, r) => seeds.map((seed) => draw({ ...fields, seed, row: r, temperature: r === 0 ? 0.8 : 1.3 })));
  const results = sampleDraws(Float32Array.of(...logits, ...logits), 2, 1000, batch, NONE, NONE);
  assert.deepEqual([...results.tokenIds.subarray(0, 50)], tokens);
  assert.ok(new Set(tokens).size > 10, 'different seeds draw different tokens');
});

test('logprobs describe the raw row: the drawn token and the most likely ones, before penalties and truncation', () => {
  const raw = [2, 1, 0, -1, NaN];
  const logZ = Math.log(raw.slice(0, 4).reduce((s, x) => s + Math.exp(x), 0));
  const outcome = sampleDraw(row(raw), greedy({ topLogprobs: 3, repetitionPenalty: 100, topK: 1, ...penalties([[0, 0]]) }), []);
  assert.equal(outcome.tokenId, 1, 'the penalty moved the choice');
  assert.deepEqual(outcome.topIds, [0, 1, 2]);
  outcome.topIds.forEach((id, j) => assert.ok(Math.abs(outcome.topLogprobs[j] - (raw[id] - logZ)) < 1e-6));
  assert.ok(Math.abs(outcome.logprob - (1 - logZ)) < 1e-6);
  assert.deepEqual(sampleDraw(row(raw), greedy({ topLogprobs: 9 }), []).topIds, [0, 1, 2, 3], 'never NaN, never more than there are');
});

test('a scored draw reports its token with the raw logprob and top alternatives, whatever else the row holds', () => {
  const raw = [2, 1, 0, -1];
  const logZ = Math.log(raw.reduce((s, x) => s + Math.exp(x), 0));
  const scored = sampleDraw(row(raw), scoreDraw(0, 3, 2), []);
  assert.equal(scored.tokenId, 3);
  assert.ok(Math.abs(scored.logprob - (-1 - logZ)) < 1e-6);
  assert.deepEqual(scored.topIds, [0, 1]);
  assert.throws(() => sampleDraws(row(raw), 1, 4, [scoreDraw(0, 4, 0)], NONE, NONE), /draw 0 names token 4, outside the 4 columns/);
});

test('sampleDraws reads pending tokens from the previous pass and checks what it is given', () => {
  const logits = row([3, 2.9, 1, 0, 0, 5]);
  const results = sampleDraws(logits, 2, 3, [greedy({ presencePenalty: 1, pendingDraw: 1 }), greedy({ row: 1, topLogprobs: 2 }), greedy()], Int32Array.of(2, 0), NONE);
  assert.deepEqual([...results.tokenIds], [1, 2, 0]);
  assert.equal(results.topWidth, 2);
  assert.deepEqual([...results.topIds], [-1, -1, 2, 0, -1, -1]);
  assert.throws(() => sampleDraws(logits, 2, 3, [greedy({ row: 2 })], NONE, NONE), /draw 0 reads row 2, outside \[0, 2\)/);
  assert.throws(() => sampleDraws(logits, 2, 3, [greedy({ pendingDraw: 2 })], Int32Array.of(0, 1), NONE), /pending token 2 is outside the 2 previous draws/);
});

test('a draw counts the drafts before it in its draft history row, each occurrence once, and writes its token after them', () => {
  // Row 0 of the logits favours token 0, then 1, then 2: each draft counted pushes the draw down the list.
  const logits = row([3, 2.8, 2.7, -1]);
  const history = new Int32Array(2 * DRAFT_HISTORY_COLUMNS).fill(-7);
  const chained = (length: number, fields: Partial<Draw> = {}) => greedy({ frequencyPenalty: 0.15, draftHistoryRow: 1, draftHistoryLength: length, ...fields });
  const pass = (d: Draw) => sampleDraws(logits, 1, 4, [d], NONE, history).tokenIds[0];
  assert.equal(pass(chained(0)), 0, 'nothing before the first draft');
  assert.equal(history[DRAFT_HISTORY_COLUMNS], 0, 'its token, at column 0 of row 1');
  assert.equal(pass(chained(1)), 0, 'token 0 once: 3 - 0.15 = 2.85 > 2.8');
  assert.equal(pass(chained(2)), 1, 'token 0 twice: 3 - 0.3 = 2.7 < 2.8');
  assert.equal(history[DRAFT_HISTORY_COLUMNS + 2], 1);
  assert.equal(pass(chained(2, { ...penalties([[0, 1]]) })), 1, 'listed once by the host and twice in the history: 3 - 0.45');
  // The host's count and the history's add up exactly as if the host had listed the drafts.
  const listed = sampleDraws(logits, 1, 4, [greedy({ frequencyPenalty: 0.15, ...penalties([[0, 3], [1, 1]]) })], NONE, NONE).tokenIds[0];
  assert.equal(listed, 2);
  assert.equal(pass(chained(3, { ...penalties([[0, 1]]) })), listed);
  assert.deepEqual([...history.subarray(0, DRAFT_HISTORY_COLUMNS)], new Array(DRAFT_HISTORY_COLUMNS).fill(-7), 'row 0 untouched');
  assert.throws(() => sampleDraws(logits, 1, 4, [chained(0, { draftHistoryRow: 2 })], NONE, history), /draft history has 2 rows, fewer than the draws name/);
  assert.throws(() => sampleDraws(logits, 1, 4, [chained(DRAFT_HISTORY_COLUMNS)], NONE, history), /follows 64 drafts in the draft history, which holds 64 per row/);
  assert.throws(() => sampleDraws(logits, 1, 4, [chained(0), chained(1)], NONE, history), /draws 0 and 1 both write draft history row 1/);
});

test('drawDistribution is what the draws sample: softmax over the tokens truncation keeps, one-hot when greedy', () => {
  const logits = fromProbs([0.4, 0.3, 0.2, 0.1]);
  const close = (actual: Float64Array, expected: number[]) => expected.forEach((p, i) => assert.ok(Math.abs(actual[i] - p) < 1e-6, `${[...actual]} vs ${expected}`));
  close(drawDistribution(logits, draw(), []), [0.4, 0.3, 0.2, 0.1]);
  close(drawDistribution(logits, draw({ topK: 2 }), []), [4 / 7, 3 / 7, 0, 0]);
  close(drawDistribution(logits, draw({ topP: 0.65 }), []), [4 / 7, 3 / 7, 0, 0]);
  close(drawDistribution(logits, draw({ minP: 0.6 }), []), [4 / 7, 3 / 7, 0, 0]);
  close(drawDistribution(logits, greedy(), []), [1, 0, 0, 0]);
  // Temperature 2 takes square roots of the probabilities before renormalizing.
  const roots = [0.4, 0.3, 0.2, 0.1].map(Math.sqrt);
  close(drawDistribution(logits, draw({ temperature: 2 }), []), roots.map((r) => r / roots.reduce((a, b) => a + b)));
  const counts = [0, 0, 0, 0];
  const truncated = draw({ temperature: 0.7, topK: 3 });
  for (let seed = 0; seed < 20000; seed++) counts[sampleDraw(logits, { ...truncated, seed }, []).tokenId]++;
  drawDistribution(logits, truncated, []).forEach((p, i) => assert.ok(Math.abs(counts[i] / 20000 - p) < 0.015, `token ${i}: ${counts[i] / 20000} vs ${p}`));
});

test('an allowed-token mask limits the draw to its tokens, renormalized, and leaves the raw logprobs alone', () => {
  const logits = fromProbs([0.1, 0.2, 0.3, 0.4]);
  const allowedTokens = allowedMask(4, [0, 2]);
  assert.equal(sampleDraw(logits, greedy({ allowedTokens }), []).tokenId, 2);
  const outcome = sampleDraw(logits, greedy({ allowedTokens, topLogprobs: 2 }), []);
  assert.deepEqual(outcome.topIds, [3, 2], 'the top alternatives are the raw row\'s');
  assert.ok(Math.abs(outcome.logprob - Math.log(0.3)) < 1e-6);
  const draws = 20_000;
  assertClose(frequencies(logits, { allowedTokens }, draws), [0.25, 0, 0.75, 0], draws);
  assert.deepEqual([...drawDistribution(logits, draw({ allowedTokens }), [])].map((p) => Math.round(p * 100) / 100), [0.25, 0, 0.75, 0]);
  assert.equal(sampleDraw(logits, greedy({ allowedTokens, maskedTokenIds: Int32Array.of(0, 2) }), []).tokenId, -1, 'nothing left');
});
