import assert from 'node:assert/strict';
import { test } from 'node:test';
import { KeelError } from '../errors.ts';
import { DEFAULT_SAMPLING_PARAMS } from './sampling-params.ts';
import { checkTokenIds, resolveSamplingParams } from './validate.ts';

function rejects(input: unknown, message: string | RegExp, defaults = {}): void {
  assert.throws(
    () => resolveSamplingParams(input, defaults),
    (error: unknown) => {
      assert.ok(error instanceof KeelError, `expected a KeelError, got ${String(error)}`);
      assert.equal(error.kind, 'invalid_argument');
      if (typeof message === 'string') assert.equal(error.message, message);
      else assert.match(error.message, message);
      return true;
    },
  );
}

test('empty input resolves to the defaults, with fresh arrays', () => {
  const resolved = resolveSamplingParams({});
  assert.deepEqual(resolved, DEFAULT_SAMPLING_PARAMS);
  assert.notEqual(resolved.stop, DEFAULT_SAMPLING_PARAMS.stop);
  assert.deepEqual(resolveSamplingParams(undefined), DEFAULT_SAMPLING_PARAMS);
});

test('input overrides defaults, which override the built-in defaults; undefined counts as absent', () => {
  const resolved = resolveSamplingParams({ temperature: 0.5, topK: undefined }, { temperature: 0.7, topK: 40, topP: 0.9 });
  assert.equal(resolved.temperature, 0.5);
  assert.equal(resolved.topK, 40);
  assert.equal(resolved.topP, 0.9);
  assert.equal(resolved.maxTokens, DEFAULT_SAMPLING_PARAMS.maxTokens);
});

test('accepts the edges of every range', () => {
  const resolved = resolveSamplingParams({
    n: 128,
    temperature: 0,
    topP: 1,
    topK: -1,
    minP: 1,
    repetitionPenalty: 100,
    presencePenalty: -2,
    frequencyPenalty: 2,
    seed: -(2 ** 53 - 1),
    stopTokenIds: [0, 151643],
    maxTokens: 1,
    minTokens: 1,
    logprobs: 20,
    promptLogprobs: 0,
    ignoreEos: true,
  });
  assert.equal(resolved.n, 128);
  assert.equal(resolved.temperature, 0);
  assert.equal(resolved.seed, -(2 ** 53 - 1));
  assert.equal(resolved.minTokens, 1);
  assert.equal(resolveSamplingParams({ n: 4, temperature: 0 }).n, 4, 'n > 1 with greedy sampling is allowed');
});

test('stop: a single string becomes a one-element list; arrays are copied', () => {
  assert.deepEqual(resolveSamplingParams({ stop: '\n\n' }).stop, ['\n\n']);
  const stops = ['a', 'b'];
  const resolved = resolveSamplingParams({ stop: stops });
  assert.deepEqual(resolved.stop, stops);
  assert.notEqual(resolved.stop, stops);
});

test('each numeric field names itself and its range when out of range', () => {
  rejects({ n: 0 }, 'n must be an integer in [1, 128] (got 0)');
  rejects({ n: 129 }, 'n must be an integer in [1, 128] (got 129)');
  rejects({ n: 1.5 }, 'n must be an integer in [1, 128] (got 1.5)');
  rejects({ temperature: -1 }, 'temperature must be a number in [0, 100] (got -1)');
  rejects({ temperature: 101 }, 'temperature must be a number in [0, 100] (got 101)');
  rejects({ temperature: Number.NaN }, 'temperature must be a number in [0, 100] (got NaN)');
  rejects({ temperature: '0.7' }, 'temperature must be a number in [0, 100] (got "0.7")');
  rejects({ topP: 0 }, 'topP must be a number in (0, 1] (got 0)');
  rejects({ topP: 1.01 }, 'topP must be a number in (0, 1] (got 1.01)');
  rejects({ topK: -2 }, 'topK must be an integer >= -1 (got -2)');
  rejects({ topK: 2.5 }, 'topK must be an integer >= -1 (got 2.5)');
  rejects({ minP: -0.1 }, 'minP must be a number in [0, 1] (got -0.1)');
  rejects({ minP: 1.5 }, 'minP must be a number in [0, 1] (got 1.5)');
  rejects({ repetitionPenalty: 0 }, 'repetitionPenalty must be a number in (0, 100] (got 0)');
  rejects({ repetitionPenalty: Infinity }, 'repetitionPenalty must be a number in (0, 100] (got Infinity)');
  rejects({ presencePenalty: 2.5 }, 'presencePenalty must be a number in [-2, 2] (got 2.5)');
  rejects({ frequencyPenalty: -3 }, 'frequencyPenalty must be a number in [-2, 2] (got -3)');
  rejects({ seed: 0.5 }, 'seed must be a safe integer or null (got 0.5)');
  rejects({ seed: 2 ** 53 }, 'seed must be a safe integer or null (got 9007199254740992)');
  rejects({ maxTokens: 0 }, 'maxTokens must be an integer >= 1 (got 0)');
  rejects({ minTokens: -1 }, 'minTokens must be an integer >= 0 (got -1)');
  rejects({ maxTokens: 8, minTokens: 9 }, 'minTokens must be an integer in [0, maxTokens=8] (got 9)');
  rejects({ logprobs: 21 }, 'logprobs must be an integer in [0, 20] or null (got 21)');
  rejects({ promptLogprobs: -1 }, 'promptLogprobs must be an integer in [0, 20] or null (got -1)');
});

test('stop strings and stop token ids name their field and what they accept', () => {
  const stopRule = 'a non-empty string or an array of at most 16 non-empty strings';
  rejects({ stop: '' }, `stop must be ${stopRule} (got "")`);
  rejects({ stop: ['a', ''] }, `stop must be ${stopRule} (got ["a",""])`);
  rejects({ stop: ['a', 3] }, `stop must be ${stopRule} (got ["a",3])`);
  rejects({ stop: null }, `stop must be ${stopRule} (got null)`);
  rejects({ stop: Array.from({ length: 17 }, (_, i) => `s${i}`) }, /^stop must be a non-empty string or an array of at most 16 .*\.\.\.\)$/);
  rejects({ stopTokenIds: [1, -1] }, 'stopTokenIds must be an array of non-negative integers (got [1,-1])');
  rejects({ stopTokenIds: 2 }, 'stopTokenIds must be an array of non-negative integers (got 2)');
});

test('booleans must be booleans', () => {
  for (const field of ['includeStopStrInOutput', 'ignoreEos', 'skipSpecialTokens']) {
    rejects({ [field]: 'yes' }, `${field} must be a boolean (got "yes")`);
    rejects({ [field]: 1 }, `${field} must be a boolean (got 1)`);
  }
});

test('nullable fields take null; the others do not', () => {
  const resolved = resolveSamplingParams({ seed: null, logprobs: null, promptLogprobs: null }, { seed: 5, logprobs: 2 });
  assert.equal(resolved.seed, null);
  assert.equal(resolved.logprobs, null);
  rejects({ temperature: null }, 'temperature must be a number in [0, 100] (got null)');
});

test('unknown keys are rejected by name, with a hint for snake_case spellings', () => {
  rejects({ top_p: 0.9 }, 'unknown sampling parameter "top_p" (did you mean "topP"?)');
  rejects({ max_tokens: 5 }, 'unknown sampling parameter "max_tokens" (did you mean "maxTokens"?)');
  rejects({ bestOf: 2 }, 'unknown sampling parameter "bestOf"');
  rejects({ toString: 1 }, 'unknown sampling parameter "toString"');
});

test('input that is not an object is rejected', () => {
  rejects([1], 'sampling parameters must be an object (got [1])');
  rejects('greedy', 'sampling parameters must be an object (got "greedy")');
});

test('bad defaults are reported as defaults', () => {
  rejects({}, 'sampling default temperature must be a number in [0, 100] (got -1)', { temperature: -1 });
  rejects({}, 'unknown sampling default "top_k" (did you mean "topK"?)', { top_k: 5 });
  rejects({ maxTokens: 4 }, 'minTokens must be an integer in [0, maxTokens=4] (got 8)', { minTokens: 8 });
});

test('logitBias maps token ids to biases in [-100, 100], naming the key that is not', () => {
  const resolved = resolveSamplingParams({ logitBias: { '50256': -100, 7: 100, '0': 0.5 } });
  assert.deepEqual(resolved.logitBias, { 0: 0.5, 7: 100, 50256: -100 });
  rejects({ logitBias: { abc: 1 } }, 'logitBias key "abc" is not a token id (a non-negative integer)');
  rejects({ logitBias: { '-3': 1 } }, /key "-3" is not a token id/);
  rejects({ logitBias: { '2.5': 1 } }, /key "2.5" is not a token id/);
  rejects({ logitBias: { '5': 100.5 } }, 'logitBias key "5" must map to a number in [-100, 100] (got 100.5)');
  rejects({ logitBias: { '5': '1' } }, /key "5" must map to a number in \[-100, 100\] \(got "1"\)/);
  rejects({ logitBias: [1] }, /logitBias must be an object mapping token ids to biases/);
  assert.equal(resolveSamplingParams({ logitBias: null }).logitBias, null);
});

test('allowedTokenIds is a non-empty list of token ids', () => {
  assert.deepEqual(resolveSamplingParams({ allowedTokenIds: [3, 1] }).allowedTokenIds, [3, 1]);
  rejects({ allowedTokenIds: [] }, /allowedTokenIds must be a non-empty array of non-negative integers/);
  rejects({ allowedTokenIds: [1, -1] }, /allowedTokenIds must be/);
});

test('the token ids of logitBias and allowedTokenIds must lie in the vocabulary', () => {
  const inside = resolveSamplingParams({ logitBias: { 9: 1 }, allowedTokenIds: [0, 9] });
  checkTokenIds(inside, 10);
  const invalid = (params: unknown, message: string) =>
    assert.throws(() => checkTokenIds(resolveSamplingParams(params), 10), (e: unknown) => e instanceof KeelError && e.kind === 'invalid_argument' && e.message === message);
  invalid({ logitBias: { 10: 1 } }, 'logitBias key "10" is outside the vocabulary (0..9)');
  invalid({ allowedTokenIds: [3, 12] }, 'allowedTokenIds holds 12, outside the vocabulary (0..9)');
});

test('badWords is a list of words, none blank', () => {
  assert.deepEqual(resolveSamplingParams({ badWords: ['foo', ' bar baz'] }).badWords, ['foo', ' bar baz']);
  rejects({ badWords: ['ok', '  '] }, /badWords must be an array of at most 256 strings, none blank/);
  rejects({ badWords: 'foo' }, /badWords must be/);
});

test('beam search refuses a logit bias, allowed token ids and bad words, which it would not apply', () => {
  rejects({ useBeamSearch: true, n: 1, logitBias: { 1: 5 } }, 'logitBias is not supported with useBeamSearch (stop token ids are)');
  rejects({ useBeamSearch: true, n: 1, allowedTokenIds: [1] }, 'allowedTokenIds is not supported with useBeamSearch (stop token ids are)');
  rejects({ useBeamSearch: true, n: 1, badWords: ['x'] }, 'badWords is not supported with useBeamSearch (stop token ids are)');
});
