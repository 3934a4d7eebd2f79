import assert from 'node:assert/strict';
import { test } from 'node:test';
import { logSumExp, topTokenIds } from './logprobs.ts';

const row = (values: number[]) => Float32Array.from(values);

test('logSumExp matches the naive sum and does not overflow', () => {
  const values = [0.5, -1, 2, 0];
  assert.ok(Math.abs(logSumExp(row(values)) - Math.log(values.reduce((s, x) => s + Math.exp(x), 0))) < 1e-12);
  assert.ok(Math.abs(logSumExp(row([1000, 1000])) - (1000 + Math.LN2)) < 1e-9);
  assert.equal(logSumExp(row([3, -Infinity])), 3);
  assert.equal(logSumExp(row([3, NaN])), 3, 'NaN is left out');
  assert.equal(logSumExp(row([-Infinity, NaN])), -Infinity);
});

test('topTokenIds: largest first, lower id first among equals, never more than asked', () => {
  const logits = row([1, 4, 2, 4, -Infinity, 3]);
  assert.deepEqual(topTokenIds(logits, 3), [1, 3, 5]);
  assert.deepEqual(topTokenIds(logits, 1), [1]);
  assert.deepEqual(topTokenIds(logits, 0), []);
  assert.deepEqual(topTokenIds(logits, 10), [1, 3, 5, 2, 0, 4]);
  assert.deepEqual(topTokenIds(row([2, 2, 2]), 2), [0, 1]);
  assert.deepEqual(topTokenIds(row([NaN, 1, NaN]), 3), [1], 'never NaN');
});
