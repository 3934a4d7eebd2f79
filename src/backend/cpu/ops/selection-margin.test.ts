import assert from 'node:assert/strict';
import { test } from 'node:test';
import { selectionMargin } from './selection-margin.ts';

const near = (a: number, b: number) => Math.abs(a - b) < 1e-12;

test('the margin is the gap between the last value kept and the best left out, over the candidates\' largest magnitude', () => {
  assert.ok(near(selectionMargin([3, 1, 2.9, 0], 1), 0.1 / 3));
  assert.ok(near(selectionMargin([3, 1, 2.9, 0], 2), 1.9 / 3));
  assert.ok(near(selectionMargin([0.5, -4, 0.4], 1), 0.1 / 4), 'negative values count by magnitude');
  assert.ok(near(selectionMargin([2, 1.98], 1), 0.01), 'two candidates');
  assert.equal(selectionMargin([1, 2, 2, 0], 1), 0, 'a tie');
});

test('masked candidates are no candidates; nothing left out, or all zero, is no close call', () => {
  assert.ok(near(selectionMargin([3, -Infinity, 2, 1], 1), 1 / 3));
  assert.equal(selectionMargin([3, -Infinity, 2], 2), Infinity);
  assert.equal(selectionMargin([0, 0, 0], 1), Infinity);
  assert.equal(selectionMargin([5, 4], 0), Infinity);
});
