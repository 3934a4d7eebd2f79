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

test('a verification step pads with verification rows of as many tokens in the scratch block, every token with its logits', () => {
  const graphs = new GraphBatches({ maxBatchSize: 8, scratchBlock: 99, scratchStateSlot: null }, BLOCK_SIZE);
  const chunk = (block: number) => ({ tokens: [5, 6, 7, 8, 9], startPos: 6, blockTables: [[block, block + 10, block + 20]], verification: true });
  const batch = graphs.padded([chunk(0), chunk(3), chunk(1)], graphs.sizeFor(3)!, 5);
  assert.equal(batch.numSeqs, 4);
  assert.equal(batch.numTokens, 20);
  assert.deepEqual(Array.from(batch.logitsIndices), Array.from({ length: 20 }, (_, i) => i));
  assert.deepEqual(Array.from(batch.verificationChunks!), [1, 1, 1, 1]);
  // The padding row's five tokens and the slot after them (positions 0..5) lie in scratch blocks.
  const padding = Array.from(batch.slotMapping.subarray(15, 20));
  assert.ok(padding.every((slot) => Math.floor(slot / BLOCK_SIZE) === 99), `padding slots ${padding}`);
  assert.deepEqual(Array.from(batch.blockTables.subarray(3 * batch.maxBlocksPerSeq, 3 * batch.maxBlocksPerSeq + 2)), [99, 99]);
});
