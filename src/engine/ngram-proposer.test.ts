import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ngramDrafts } from './ngram-proposer.ts';

test('proposes what followed the latest earlier occurrence of the longest matching suffix', () => {
  // The 2-gram [1, 2] occurred twice before; the latest occurrence was followed by 7, 8.
  assert.deepEqual(ngramDrafts([1, 2, 3, 4, 1, 2, 7, 8, 9, 1, 2], 1, 3, 2), [7, 8]);
  // The 3-gram [9, 1, 2] occurred once, followed by 5: it wins over the later 2-gram match.
  assert.deepEqual(ngramDrafts([9, 1, 2, 5, 6, 1, 2, 7, 9, 1, 2], 1, 3, 2), [5, 6]);
});

test('tries shorter suffixes down to ngramMin, and proposes nothing below it', () => {
  assert.deepEqual(ngramDrafts([4, 5, 6, 5], 1, 3, 3), [6, 5, 6]);
  assert.deepEqual(ngramDrafts([4, 5, 6, 5], 2, 3, 3), []);
  assert.deepEqual(ngramDrafts([7], 1, 3, 3), []);
});

test('continues a repeating pattern past the end of the sequence', () => {
  // [2, 3] last occurred at 1..2, followed by 1 2 3 and then its own proposals.
  assert.deepEqual(ngramDrafts([1, 2, 3, 1, 2, 3], 2, 2, 5), [1, 2, 3, 1, 2]);
  assert.deepEqual(ngramDrafts([5, 5, 5], 1, 2, 4), [5, 5, 5, 5]);
});
