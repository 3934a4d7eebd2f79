import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MAX_RESTART_DELAY_MS, RECOVERED_AFTER_MS, RestartBudget } from './restart-budget.ts';

test('restarts in a row wait 1 s, doubling up to 30 s, and stop after the budget', () => {
  const budget = new RestartBudget(7, () => 0);
  const delays = Array.from({ length: 8 }, () => budget.nextDelay());
  assert.deepEqual(delays, [1_000, 2_000, 4_000, 8_000, 16_000, MAX_RESTART_DELAY_MS, MAX_RESTART_DELAY_MS, null]);
  assert.equal(budget.nextDelay(), null, 'given up for good');
});

test('a budget of 0 never restarts', () => {
  assert.equal(new RestartBudget(0).nextDelay(), null);
});

test('a replica that dies soon after its restart keeps counting; one that served 10 minutes starts afresh', () => {
  let now = 0;
  const budget = new RestartBudget(2, () => now);
  assert.equal(budget.nextDelay(), 1_000);
  budget.serving();
  now += RECOVERED_AFTER_MS - 1;
  assert.equal(budget.nextDelay(), 2_000, 'a death before it recovered is the second in a row');
  budget.serving();
  now += RECOVERED_AFTER_MS;
  assert.equal(budget.nextDelay(), 1_000, 'it served long enough: the first of a new run');
  assert.equal(budget.nextDelay(), 2_000, 'a failed attempt counts');
  assert.equal(budget.nextDelay(), null);
});
