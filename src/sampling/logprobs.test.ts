import assert from 'node:assert/strict';
import { test } from 'node:test';
import { logSumExp, tokenLogprobs, topTokenIds } from './logprobs.ts';

const row = (values: number[]) => Float32Array.from(values);

test('logSumExp matches the naive sum and does not overflow', () => {
  const values = [0.5, -1, 2, 0];
  assert.ok(Math.abs(logSumExp(row(values)) - Math.log(values.reduce((s, x) => s + Math.exp(x), 0))) < 1e-12);
  assert.ok(Math.abs(logSumExp(row([1000, 1000])) - (1000 + Math.LN2)) < 1e-9);
  assert.equal(logSumExp(row([3, -Infinity])), 3);
});

test('topTokenIds: largest first, lower id first among equals, never more than asked', () => {
  const logits = row([1, 4, 2, 4, -Infinity, 3]);
  assert.deepEqual(topTokenIds(logits, 3), [1, 3, 5]);
  assert.deepEqual(topTokenIds(logits, 1), [1]);
  assert.deepEqual(topTokenIds(logits, 0), []);
  assert.deepEqual(topTokenIds(logits, 10), [1, 3, 5, 2, 0, 4]);
  assert.deepEqual(topTokenIds(row([2, 2, 2]), 2), [0, 1]);
});

test('tokenLogprobs: normalized, sorted descending, sampled token looked up by id', () => {
  const logits = row([0.3, -2, 1.7, 0.9, 1.7]);
  const result = tokenLogprobs(logits, 1, logits.length);
  const total = result.top.reduce((sum, t) => sum + Math.exp(t.logprob), 0);
  assert.ok(Math.abs(total - 1) < 1e-6, `probabilities sum to ${total}`);
  assert.deepEqual(
    result.top.map((t) => t.tokenId),
    [2, 4, 3, 0, 1],
  );
  for (let i = 1; i < result.top.length; i++) assert.ok(result.top[i - 1].logprob >= result.top[i].logprob);
  assert.equal(result.sampled.tokenId, 1);
  assert.equal(result.sampled.logprob, result.top[4].logprob);
  assert.ok(result.sampled.logprob < 0);

  const shifted = tokenLogprobs(row([100.3, 98, 101.7, 100.9, 101.7]), 1, 2);
  assert.ok(Math.abs(shifted.sampled.logprob - result.sampled.logprob) < 1e-4, 'invariant to adding a constant');
  assert.equal(shifted.top.length, 2);
});
