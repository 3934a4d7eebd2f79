import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loraShrinkSplit } from '../../../src/backend/cuda/kernels/lora.ts';
import { LORA_TILE_TOKENS, loraTileCapacity, planLoraTiles } from '../../../src/backend/cuda/lora-tiles.ts';
import { seededRng } from '../../../src/bench/synthetic-batch.ts';
import { randInt, testSeed } from '../../helpers/gpu-test-support.ts';

/** A step's slots as the engine lays them out: runs of one slot (a sequence's tokens), -1 for the base model. */
function randomSlots(rng: () => number, slots: number): Int32Array {
  const runs = Array.from({ length: randInt(rng, 1, 40) }, () => new Array<number>(randInt(rng, 1, rng() < 0.5 ? 1 : 600)).fill(randInt(rng, -1, slots - 1)));
  return Int32Array.from(runs.flat());
}

test('tiles take every adapted token once, by slot and in step order within one, at most a tile each', () => {
  const rng = seededRng(testSeed('lora tiles'));
  for (let trial = 0; trial < 200; trial++) {
    const slots = randInt(rng, 1, 40);
    const step = randomSlots(rng, slots);
    const { order, tiles } = planLoraTiles(step);
    assert.equal(order.length, step.length);
    assert.equal(tiles.length, 1 + 3 * step.length);
    const adapted = [...step.keys()].filter((t) => step[t] >= 0);
    const sorted = [...adapted].sort((a, b) => step[a] - step[b] || a - b);
    assert.deepEqual([...order.subarray(0, adapted.length)], sorted);
    const numTiles = tiles[0];
    assert.ok(numTiles <= loraTileCapacity(step.length, slots), `${numTiles} tiles exceed the capacity for ${step.length} tokens and ${slots} slots`);
    let next = 0;
    for (let i = 0; i < numTiles; i++) {
      const [slot, start, count] = tiles.subarray(1 + 3 * i, 4 + 3 * i);
      assert.equal(start, next, `tile ${i} starts where the previous one ended`);
      assert.ok(count >= 1 && count <= LORA_TILE_TOKENS, `tile ${i} holds ${count} tokens`);
      for (let p = start; p < start + count; p++) assert.equal(step[order[p]], slot, `tile ${i} holds one slot's tokens`);
      // A tile is full unless its slot's segment ends with it.
      if (count < LORA_TILE_TOKENS && start + count < adapted.length) assert.notEqual(step[order[start + count]], slot);
      next = start + count;
    }
    assert.equal(next, adapted.length);
  }
});

test('a step of base-model tokens only has no tiles', () => {
  const { tiles } = planLoraTiles(new Int32Array(5).fill(-1));
  assert.equal(tiles[0], 0);
});

test('the capacity is reached by segments that each leave a partial tile', () => {
  // Three slots of 17, 17 and 1 tokens: 2 + 2 + 1 tiles, ceil(35 / 16) + 3 - 1 = 5.
  const step = Int32Array.from([...new Array<number>(17).fill(0), ...new Array<number>(17).fill(1), 2]);
  assert.equal(planLoraTiles(step).tiles[0], 5);
  assert.equal(loraTileCapacity(step.length, 3), 5);
  assert.equal(loraTileCapacity(4, 32), 4);
});

test("the shrink's split of the input width: whole parts of 128 inputs covering it, none empty, more for decode-sized steps", () => {
  for (const inDim of [8, 1000, 4096, 14336]) {
    for (const numTokens of [1, 128, 2048]) {
      const { splits, kSplit } = loraShrinkSplit(numTokens, inDim, 3, 16, 32, 132);
      assert.equal(kSplit % 128, 0);
      assert.ok(splits >= 1 && splits <= 8, `${splits} splits`);
      assert.ok(splits * kSplit >= inDim && (splits - 1) * kSplit < inDim, `${splits} x ${kSplit} for ${inDim} inputs`);
    }
  }
  assert.ok(loraShrinkSplit(128, 4096, 3, 16, 32, 132).splits > 1);
  assert.equal(loraShrinkSplit(8192, 4096, 3, 16, 32, 132).splits, 1);
});
