import assert from 'node:assert/strict';
import { test } from 'node:test';
import { KeelError } from '../errors.ts';
import { checkDraws, drawEntries, drawFor, drawnToken, entryCount, MASKED, penalizedLogit, UNSEEN, type DrawContext, type DrawResults } from './draw.ts';
import { logitBias, penaltyEntries, testDraw } from '../../test/helpers/sampling-draw.ts';
import { PenaltyTokens } from './penalty-tokens.ts';
import type { Rng } from './rng.ts';
import { DEFAULT_SAMPLING_PARAMS, type SamplingParams } from './sampling-params.ts';

function countingRng(): Rng & { draws: number } {
  const rng = { draws: 0, nextUint32: () => ++rng.draws * 1000, nextFloat: () => assert.fail('draws take seeds only'), clone: () => assert.fail('draws do not clone') };
  return rng;
}

/** Prompt [4, 5], output 5, 9, 5 so far. */
function penaltyTokens(withPrompt: boolean): PenaltyTokens {
  const tokens = new PenaltyTokens([4, 5], withPrompt);
  for (const id of [5, 9, 5]) tokens.add(id);
  return tokens;
}

function context(fields: Partial<DrawContext> = {}): DrawContext {
  return { row: 3, rng: countingRng(), penaltyTokens: null, numOutputTokens: 3, pendingDraw: 7, draftHistory: null, eosTokenIds: [2], allowedTokens: null, logitBias: null, bannedTokenIds: [], ...fields };
}
const params = (fields: Partial<SamplingParams>): SamplingParams => ({ ...DEFAULT_SAMPLING_PARAMS, ...fields });

test('a greedy draw takes no seed from the stream; a random draw takes one', () => {
  const rng = countingRng();
  const greedy = drawFor(params({ temperature: 1e-6 }), context({ rng }));
  assert.equal(greedy.temperature, 0);
  assert.equal(rng.draws, 0);
  const random = drawFor(params({ temperature: 0.7, topK: -1 }), context({ rng }));
  assert.deepEqual([random.temperature, random.seed, random.topK, random.row], [0.7, 1000, 0, 3]);
  assert.equal(rng.draws, 1);
});

test('a draw carries the completion\'s penalty entries, and reads the pending token only with penalties', () => {
  const plain = drawFor(params({}), context());
  assert.deepEqual([plain.penaltyEntries.length, plain.pendingDraw], [0, -1]);
  const presence = drawFor(params({ presencePenalty: 0.5 }), context({ penaltyTokens: penaltyTokens(false) }));
  assert.deepEqual([...presence.penaltyEntries], [5, 2, 9, 1]);
  assert.equal(presence.pendingDraw, 7);
  const repetition = drawFor(params({ repetitionPenalty: 1.2 }), context({ penaltyTokens: penaltyTokens(true) }));
  assert.deepEqual([...repetition.penaltyEntries], [4, 0, 5, 2, 9, 1], 'token 5 once, with its output count');
  assert.throws(() => drawFor(params({ frequencyPenalty: 1 }), context()), /penalty tokens are kept exactly when a penalty applies/);
});

test('below minTokens EOS and the stop ids are masked, EOS only unless ignoreEos', () => {
  const early = { minTokens: 4, stopTokenIds: [7, 2] };
  assert.deepEqual([...drawFor(params(early), context()).maskedTokenIds], [7, 2]);
  assert.deepEqual([...drawFor(params({ ...early, ignoreEos: true }), context()).maskedTokenIds], [7, 2]);
  assert.deepEqual([...drawFor(params({ minTokens: 4 }), context()).maskedTokenIds], [2]);
  assert.deepEqual([...drawFor(params({ minTokens: 4, ignoreEos: true }), context()).maskedTokenIds], []);
  assert.deepEqual([...drawFor(params(early), context({ numOutputTokens: 4 })).maskedTokenIds], []);
});

test('the tokens bad words ban are masked, with the minTokens ones', () => {
  assert.deepEqual([...drawFor(params({}), context({ bannedTokenIds: [5, 8] })).maskedTokenIds], [5, 8]);
  assert.deepEqual([...drawFor(params({ minTokens: 4 }), context({ bannedTokenIds: [5, 2] })).maskedTokenIds], [2, 5]);
});

test('drawEntries lists each token once, a masked one as MASKED', () => {
  const draw = drawFor(params({ presencePenalty: 1, minTokens: 9 }), context({ eosTokenIds: [9, 11], penaltyTokens: penaltyTokens(false) }));
  assert.deepEqual([...drawEntries(draw).pairs], [5, 2, 9, MASKED, 11, MASKED]);
  assert.equal(drawEntries(draw).biases, null);
  const unmasked = drawFor(params({ presencePenalty: 1 }), context({ penaltyTokens: penaltyTokens(false) }));
  assert.equal(drawEntries(unmasked).pairs, unmasked.penaltyEntries, 'no masks: the entries as they are, not a copy');
});

test('drawEntries gives each listed token its bias, a token only biased as UNSEEN', () => {
  const draw = testDraw({ ...penaltyEntries([[5, 2], [9, 1]]), maskedTokenIds: Int32Array.of(9, 11), ...logitBias([[5, -3], [11, 4], [20, 1.5]]) });
  const { pairs, biases } = drawEntries(draw);
  assert.deepEqual([...pairs], [5, 2, 9, MASKED, 11, MASKED, 20, UNSEEN]);
  assert.deepEqual([...biases!], [-3, 0, 4, 1.5]);
});

test('entryCount adds the unlisted output occurrences: an UNSEEN token becomes seen once it is output', () => {
  assert.deepEqual([entryCount(2, 1), entryCount(0, 0), entryCount(MASKED, 2), entryCount(UNSEEN, 0), entryCount(UNSEEN, 2)], [3, 0, MASKED, UNSEEN, 2]);
});

test('penalizedLogit rounds each operation to float32, as the GPU does', () => {
  const draw = drawFor(params({ repetitionPenalty: 1.3, presencePenalty: 0.25, frequencyPenalty: 0.1 }), context({ penaltyTokens: penaltyTokens(true) }));
  const f = Math.fround;
  assert.equal(penalizedLogit(2.5, 0, draw), f(2.5 / f(1.3)));
  assert.equal(penalizedLogit(-2.5, 3, draw), f(f(-2.5 * f(1.3)) - f(f(f(0.1) * 3) + 0.25)));
  assert.equal(penalizedLogit(2.5, MASKED, draw), -Infinity);
  assert.equal(penalizedLogit(2.5, UNSEEN, draw), 2.5, 'a token neither in the prompt nor the output keeps its (biased) logit');
});

test('a draw carries its request\'s logit bias', () => {
  const bias = logitBias([[3, -100]]).logitBias;
  assert.equal(drawFor(params({}), context({ logitBias: bias })).logitBias, bias);
});

test('drawnToken gives the logprobs asked for and fails for a draw with nothing finite', () => {
  const results: DrawResults = {
    tokenIds: Int32Array.of(4, -1),
    logprobs: Float32Array.of(-0.5, -Infinity),
    topIds: Int32Array.of(4, 1, -1, 0, 0, 0),
    topLogprobs: Float32Array.of(-0.5, -1.5, -Infinity, 0, 0, 0),
    topWidth: 3,
  };
  assert.deepEqual(drawnToken(results, 0, params({})), { tokenId: 4 });
  assert.deepEqual(drawnToken(results, 0, params({ logprobs: 0 })).logprobs, { sampled: { tokenId: 4, logprob: -0.5 }, top: [] });
  assert.deepEqual(drawnToken(results, 0, params({ logprobs: 3 })).logprobs?.top, [{ tokenId: 4, logprob: -0.5 }, { tokenId: 1, logprob: -1.5 }]);
  assert.throws(() => drawnToken(results, 1, params({})), (e: unknown) => e instanceof KeelError && e.kind === 'backend' && /no token can be sampled/.test(e.message));
});

test('checkDraws names the draw and what it reads out of bounds', () => {
  checkDraws([testDraw({ row: 2, pendingDraw: 1, maskedTokenIds: Int32Array.of(9), ...penaltyEntries([[0, 1]]) })], 3, 10, 2);
  assert.throws(() => checkDraws([testDraw(), testDraw({ row: 3 })], 3, 10, 0), /draw 1 reads row 3, outside \[0, 3\)/);
  assert.throws(() => checkDraws([testDraw({ pendingDraw: 2 })], 3, 10, 2), /draw 0's pending token 2 is outside the 2 previous draws/);
  assert.throws(() => checkDraws([testDraw({ maskedTokenIds: Int32Array.of(10) })], 1, 10, 0), /draw 0 names token 10, outside the 10 columns/);
  assert.throws(() => checkDraws([testDraw(penaltyEntries([[3, 1], [-1, 0]]))], 1, 10, 0), /draw 0 names token -1/);
  assert.throws(() => checkDraws([testDraw(logitBias([[3, 1], [10, -1]]))], 1, 10, 0), /draw 0 names token 10/);
  const uneven = { logitBias: { tokenIds: Int32Array.of(1, 2), biases: Float32Array.of(1) } };
  assert.throws(() => checkDraws([testDraw(uneven)], 1, 10, 0), /logit bias has 2 token ids but 1 biases/);
});

test('checkDraws refuses an allowed-token mask whose length does not cover the columns', () => {
  checkDraws([testDraw({ allowedTokens: new Int32Array(2) })], 1, 33, 0);
  assert.throws(() => checkDraws([testDraw({ allowedTokens: new Int32Array(1) })], 1, 33, 0), /mask has 1 words, not the 2 of 33 columns/);
});
