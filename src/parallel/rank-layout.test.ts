import assert from 'node:assert/strict';
import { test } from 'node:test';
import { placeOf, worldSize } from './rank-layout.ts';

test('a stage\'s tensor ranks are consecutive: rank = stage × tensor + tensorRank', () => {
  const layout = { tensor: 2, pipeline: 3 };
  assert.equal(worldSize(layout), 6);
  const places = Array.from({ length: 6 }, (_, rank) => placeOf(layout, rank));
  assert.deepEqual(places, [
    { stage: 0, tensorRank: 0 },
    { stage: 0, tensorRank: 1 },
    { stage: 1, tensorRank: 0 },
    { stage: 1, tensorRank: 1 },
    { stage: 2, tensorRank: 0 },
    { stage: 2, tensorRank: 1 },
  ]);
  assert.throws(() => placeOf(layout, 6), /rank 6 is outside a run of 6 ranks/);
});
