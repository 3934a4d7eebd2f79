import assert from 'node:assert/strict';
import { test } from 'node:test';
import { poissonArrivalTimesMs } from '../../src/bench/poisson-arrivals.ts';
import { KeelError } from '../../src/errors.ts';

const SEED = Number(process.env.TEST_SEED ?? Date.now() % 100000);
console.log(`poisson-arrivals seed: ${SEED}`);

test('arrivals start at 0, never go back, and are reproducible from the seed', () => {
  const times = poissonArrivalTimesMs(500, 8, SEED);
  assert.equal(times.length, 500);
  assert.equal(times[0], 0);
  for (let i = 1; i < times.length; i++) assert.ok(times[i] >= times[i - 1]);
  assert.deepEqual(poissonArrivalTimesMs(500, 8, SEED), times);
  assert.notDeepEqual(poissonArrivalTimesMs(500, 8, SEED + 1), times);
});

test('gaps average 1/rate and spread like an exponential (standard deviation = mean)', () => {
  const rate = 8;
  const n = 20000;
  const times = poissonArrivalTimesMs(n + 1, rate, SEED);
  const gaps = times.slice(1).map((t, i) => t - times[i]);
  const meanGap = gaps.reduce((a, b) => a + b, 0) / n;
  const sd = Math.sqrt(gaps.reduce((a, g) => a + (g - meanGap) ** 2, 0) / n);
  // The mean of 20000 exponential gaps is within 3% of 125 ms with overwhelming probability (sd of the mean ~0.7%).
  assert.ok(Math.abs(meanGap - 1000 / rate) / (1000 / rate) < 0.03, `mean gap ${meanGap}`);
  assert.ok(Math.abs(sd / meanGap - 1) < 0.05, `sd/mean ${sd / meanGap}`);
  assert.ok(gaps.every((g) => g > 0 && Number.isFinite(g)));
});

test('an infinite rate sends every request at once; a rate of zero or less is a user error', () => {
  assert.deepEqual(poissonArrivalTimesMs(4, Infinity, SEED), [0, 0, 0, 0]);
  assert.throws(() => poissonArrivalTimesMs(4, 0, SEED), KeelError);
  assert.throws(() => poissonArrivalTimesMs(4, -1, SEED), /--request-rate/);
});
