import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PenaltyTokens } from './penalty-tokens.ts';

test('prompt tokens once with count 0 (only when asked), output tokens with their counts', () => {
  const withPrompt = new PenaltyTokens([4, 5, 4, 6], true);
  assert.deepEqual([...withPrompt.entries()], [4, 0, 5, 0, 6, 0]);
  withPrompt.add(5);
  withPrompt.add(9);
  withPrompt.add(5);
  assert.deepEqual([...withPrompt.entries()], [4, 0, 5, 2, 6, 0, 9, 1]);
  const outputOnly = new PenaltyTokens([4, 5], false);
  outputOnly.add(5);
  assert.deepEqual([...outputOnly.entries()], [5, 1]);
});

test('the pairs grow past their first capacity', () => {
  const tokens = new PenaltyTokens([], false);
  for (let id = 0; id < 1000; id++) tokens.add(id % 700);
  const entries = tokens.entries();
  assert.equal(entries.length, 1400);
  assert.deepEqual([entries[0], entries[1], entries[2 * 699], entries[2 * 699 + 1]], [0, 2, 699, 1]);
});
