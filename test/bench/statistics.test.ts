import assert from 'node:assert/strict';
import { test } from 'node:test';
import { flatSummary, mean, percentile, summarize } from '../../src/bench/statistics.ts';

test('percentile interpolates linearly between ranks, as numpy does', () => {
  // numpy.percentile([1, 2, 3, 4], [50, 90, 0, 100]) -> 2.5, 3.7, 1, 4
  assert.equal(percentile([4, 1, 3, 2], 50), 2.5);
  assert.ok(Math.abs(percentile([1, 2, 3, 4], 90) - 3.7) < 1e-12);
  assert.equal(percentile([1, 2, 3, 4], 0), 1);
  assert.equal(percentile([1, 2, 3, 4], 100), 4);
  // numpy.percentile(range(1, 101), 99) -> 99.01
  const hundred = Array.from({ length: 100 }, (_, i) => i + 1);
  assert.ok(Math.abs(percentile(hundred, 99) - 99.01) < 1e-9);
  assert.equal(percentile([7], 99), 7);
});

test('percentile and mean refuse what has no answer', () => {
  assert.throws(() => percentile([], 50), RangeError);
  assert.throws(() => percentile([1], 101), RangeError);
  assert.throws(() => mean([]), RangeError);
});

test('percentile does not reorder its input', () => {
  const values = [3, 1, 2];
  percentile(values, 50);
  assert.deepEqual(values, [3, 1, 2]);
});

test('summarize gives mean, median, p90, p99, and null for no values', () => {
  assert.deepEqual(summarize([10, 20, 30, 40, 50]), { mean: 30, median: 30, p90: 46, p99: 49.6 });
  assert.equal(summarize([]), null);
});

test('flatSummary names keys as vllm bench serve does', () => {
  assert.deepEqual(flatSummary('ttft_ms', { mean: 1, median: 2, p90: 3, p99: 4 }), { mean_ttft_ms: 1, median_ttft_ms: 2, p90_ttft_ms: 3, p99_ttft_ms: 4 });
  assert.deepEqual(flatSummary('itl_ms', null), { mean_itl_ms: null, median_itl_ms: null, p90_itl_ms: null, p99_itl_ms: null });
});
