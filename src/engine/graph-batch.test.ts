import assert from 'node:assert/strict';
import test from 'node:test';
import { GraphBatches } from './graph-batch.ts';

const BLOCK_SIZE = 4;

test('padding rows write to the scratch block and keep their recurrent state in the scratch slot', () => {
  const graphs = new GraphBatches({ maxBatchSize: 8, scratchBlock: 99, scratchStateSlot: 8 }, BLOCK_SIZE);
  const chunk = (slot: number) => ({ tokens: [5], startPos: 6, blockTables: [[slot, slot + 10]], stateSlot: slot });
  const batch = graphs.padded([chunk(0), chunk(3), chunk(1)], graphs.sizeFor(3)!);
  assert.equal(batch.numSeqs, 4);
  assert.deepEqual(Array.from(batch.stateSlots!), [0, 3, 1, 8]);
});

test('a model without state layers gets no state slots, padded or not', () => {
  const graphs = new GraphBatches({ maxBatchSize: 8, scratchBlock: 99, scratchStateSlot: null }, BLOCK_SIZE);
  const batch = graphs.padded([{ tokens: [5], startPos: 6, blockTables: [[0, 1]] }], graphs.sizeFor(3)!);
  assert.equal(batch.numSeqs, 4);
  assert.equal(batch.stateSlots, null);
});
