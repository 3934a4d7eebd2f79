import assert from 'node:assert/strict';
import { test } from 'node:test';
import { allowedMask, logitBias, penaltyEntries, testDraw } from '../../../../test/helpers/sampling-draw.ts';
import { UNSEEN } from '../../../sampling/draw.ts';
import { packDraws, unpackDrawResults } from './sample-rows.ts';

// The layout sample-rows.cu reads (struct Draw, 18 words; int2 entries) is checked here without a GPU.

test('packDraws lays out the entries, then one 18-word struct Draw per draw', () => {
  const draws = [
    testDraw({ row: 1, seed: 0xfedcba98, temperature: 0.5, topK: 40, topP: 0.9, minP: 0.1, repetitionPenalty: 1.2, presencePenalty: 0.3, frequencyPenalty: -0.4, pendingDraw: 3, draftHistoryRow: 6, draftHistoryLength: 2, topLogprobs: 5, ...penaltyEntries([[7, 0], [9, 2]]), maskedTokenIds: Int32Array.of(9, 11) }),
    testDraw({ temperature: 0, scoredToken: 42 }),
  ];
  const packed = packDraws(draws, 100);
  assert.equal(packed.drawsOffset, 6, 'three (token, count) entries: 9 is masked, 11 masked too');
  assert.deepEqual([...packed.words.subarray(0, 6)], [7, 0, 9, -1, 11, -1]);
  const words = packed.words.subarray(6, 24);
  const floats = new Float32Array(packed.words.buffer, 4 * 6, 18);
  assert.deepEqual([words[0], words[1] >>> 0, words[2], words[3]], [1, 0xfedcba98, 40, 3]);
  assert.deepEqual([...floats.subarray(4, 10)], [2, 0.9, Math.log(0.1), 1.2, 0.3, -0.4].map(Math.fround));
  assert.deepEqual([words[10], words[11], words[12]], [0, 3, 5], 'entries [0, 3), five top logprobs');
  const greedy = packed.words.subarray(24, 42);
  assert.equal(new Float32Array(greedy.buffer, greedy.byteOffset, 18)[4], 0, 'greedy: inverse temperature 0');
  assert.equal(new Float32Array(greedy.buffer, greedy.byteOffset, 18)[6], -Infinity, 'no min-p');
  assert.deepEqual([greedy[10], greedy[11]], [3, 3]);
  assert.deepEqual([words[13], greedy[13]], [-1, 42], 'the scored token');
  assert.deepEqual([words[15], words[16], greedy[15], greedy[16]], [6, 2, -1, 0], 'the draft history row and the drafts before the draw there');
  assert.deepEqual([words[17], greedy[17]], [-1, -1], 'no logit bias');
  assert.equal(packed.hasEntries, true);
  assert.equal(packed.topWidth, 5);
  assert.equal(packDraws([testDraw()], 100).hasEntries, false);
  assert.equal(packDraws([testDraw({ draftHistoryRow: 0, draftHistoryLength: 0 })], 100).hasEntries, false, 'no draft before it: nothing to list');
  assert.equal(packDraws([testDraw({ draftHistoryRow: 0, draftHistoryLength: 1 })], 100).hasEntries, true);
});

test('packDraws puts the allowed-token masks, then the entries\' logit biases, after the draws', () => {
  const draws = [
    testDraw({ ...penaltyEntries([[7, 1]]), ...logitBias([[7, -2.5], [3, 100]]), allowedTokens: allowedMask(40, [3, 39]) }),
    testDraw({ ...logitBias([[5, 0.25]]) }),
  ];
  const packed = packDraws(draws, 40);
  const floats = new Float32Array(packed.words.buffer);
  assert.deepEqual([...packed.words.subarray(0, 6)], [7, 1, 3, UNSEEN, 5, UNSEEN], 'entries: a biased token without a penalty is UNSEEN');
  const [first, second] = [packed.words.subarray(6, 24), packed.words.subarray(24, 42)];
  assert.deepEqual([first[10], first[11], second[10], second[11]], [0, 2, 2, 3]);
  assert.deepEqual([first[14], second[14]], [42, -1], 'the mask right after the draws');
  assert.deepEqual([...packed.words.subarray(42, 44)], [...allowedMask(40, [3, 39])]);
  assert.deepEqual([first[17], second[17]], [44, 46], 'then each draw\'s biases, one per entry');
  assert.deepEqual([...floats.subarray(44, 47)], [-2.5, 100, 0.25]);
  assert.equal(packed.words.length, 47);
  assert.equal(packed.hasEntries, true);
});

test('packDraws rejects what the kernel has no room for', () => {
  assert.throws(() => packDraws([testDraw({ topLogprobs: 33 })], 10), /33 top logprobs, more than 32/);
  assert.throws(() => packDraws([testDraw({ pendingDraw: 0 })], 1_000_000), /bitmap of 1000000 tokens/);
});

test('unpackDrawResults splits the kernel output: ids, logprobs, top ids, top logprobs', () => {
  const words = new Int32Array(2 + 2 + 4 + 4);
  const floats = new Float32Array(words.buffer);
  words.set([5, -1]);
  floats.set([-0.25, -Infinity], 2);
  words.set([5, 2, -1, -1], 4);
  floats.set([-0.25, -2, -Infinity, -Infinity], 8);
  const results = unpackDrawResults(words, 2, 2);
  assert.deepEqual([...results.tokenIds], [5, -1]);
  assert.deepEqual([...results.logprobs], [-0.25, -Infinity]);
  assert.deepEqual([...results.topIds], [5, 2, -1, -1]);
  assert.deepEqual([...results.topLogprobs], [-0.25, -2, -Infinity, -Infinity]);
});
