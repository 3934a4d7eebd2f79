import { test } from 'node:test';
import assert from 'node:assert/strict';
import { gatherRows } from './gather-rows.ts';

test('gatherRows copies the indexed rows in order, repeats included', () => {
  const table = Float32Array.from({ length: 12 }, (_, i) => i);
  const out = new Float32Array(4 * 3);
  gatherRows(table, 3, Int32Array.of(2, 0, 2, 3), out);
  assert.deepEqual(Array.from(out), [6, 7, 8, 0, 1, 2, 6, 7, 8, 9, 10, 11]);
});

test('gatherRows rejects an index outside the table instead of reading garbage', () => {
  const table = new Float32Array(6);
  assert.throws(() => gatherRows(table, 3, Int32Array.of(2), new Float32Array(3)), /row 2 is outside \[0, 2\)/);
  assert.throws(() => gatherRows(table, 3, Int32Array.of(-1), new Float32Array(3)), RangeError);
});
