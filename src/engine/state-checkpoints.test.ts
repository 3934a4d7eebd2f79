import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BlockPool } from './block-pool.ts';
import { KvCacheManager } from './kv-cache-manager.ts';
import { Scheduler } from './scheduler.ts';
import { Sequence } from './sequence.ts';
import { StateCheckpoints } from './state-checkpoints.ts';

const BLOCK_SIZE = 4;
/** Device slots: 4 sequences' from 0, then the checkpoints'. */
const SEQUENCE_SLOTS = 4;

function hybridManager(numCheckpoints: number, numBlocks = 32): KvCacheManager {
  return new KvCacheManager(new BlockPool(numBlocks, true), {
    blockSize: BLOCK_SIZE,
    enablePrefixCaching: true,
    groups: [null],
    nullBlock: numBlocks,
    stateSlots: SEQUENCE_SLOTS,
    stateCheckpoints: new StateCheckpoints(SEQUENCE_SLOTS, numCheckpoints),
  });
}

function copies(kv: KvCacheManager): [number, number][] {
  const { src, dst } = kv.takeStateCopies();
  return Array.from(src, (s, i) => [s, dst[i]]);
}

/** Runs `numTokens` more of the sequence's tokens as one step (allocation, then what the scheduler does after it). */
function runStep(kv: KvCacheManager, seq: Sequence, numTokens: number): void {
  assert.equal(kv.allocateSlots(seq, numTokens), true);
  seq.numComputedTokens += numTokens;
  kv.checkpointState(seq);
  kv.cacheFullBlocks(seq);
}

test('a state checkpoint is taken where a step ends at a block boundary, and a prefix hit ends at the last block that has one', () => {
  const kv = hybridManager(4);
  const a = new Sequence('a', [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  runStep(kv, a, 6);
  assert.deepEqual(copies(kv), [], 'a chunk ending inside a block keeps no state');
  runStep(kv, a, 2);
  assert.deepEqual(copies(kv), [[a.stateSlot, SEQUENCE_SLOTS]], 'the state after token 8 is copied into a checkpoint slot');
  runStep(kv, a, 2);
  // Blocks 0 and 1 are cached, but only the state after block 1 is kept: a prompt sharing all ten
  // tokens hits 8 of them, one sharing the first six hits none (block 0 has no state).
  const b = new Sequence('b', [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
  assert.equal(kv.getComputedBlocks(b).numTokens, 8);
  const c = new Sequence('c', [1, 2, 3, 4, 5, 6, 70, 80, 90]);
  assert.equal(kv.getComputedBlocks(c).numTokens, 0);
  // The hit's state is copied into b's own slot before its first step.
  assert.equal(kv.allocateSlots(b, 3, kv.getComputedBlocks(b)), true);
  assert.deepEqual(copies(kv), [[SEQUENCE_SLOTS, b.stateSlot]]);
  kv.checkInvariants([a, b]);
});

test('a checkpoint is readable only once its fill is taken, and is not evicted while a pending copy reads it', () => {
  const kv = hybridManager(1);
  const a = new Sequence('a', [1, 2, 3, 4, 5]);
  runStep(kv, a, 4);
  const b = new Sequence('b', [1, 2, 3, 4, 9]);
  assert.equal(kv.getComputedBlocks(b).numTokens, 0, 'its fill has not run yet');
  copies(kv);
  assert.equal(kv.allocateSlots(b, 1, kv.getComputedBlocks(b)), true);
  // Another sequence reaches a boundary while b's restore is pending: the one slot is taken, so no checkpoint.
  const d = new Sequence('d', [7, 7, 7, 7, 7]);
  runStep(kv, d, 4);
  assert.deepEqual(copies(kv), [[SEQUENCE_SLOTS, b.stateSlot]], 'the restore alone; d keeps no state');
  assert.equal(kv.getComputedBlocks(new Sequence('e', [7, 7, 7, 7, 1])).numTokens, 0);
  // Once the restore has run, the next boundary evicts the least recently used checkpoint.
  const f = new Sequence('f', [8, 8, 8, 8, 8]);
  runStep(kv, f, 4);
  assert.deepEqual(copies(kv), [[f.stateSlot, SEQUENCE_SLOTS]]);
  assert.equal(kv.getComputedBlocks(new Sequence('g', [1, 2, 3, 4, 1])).numTokens, 0, 'a\'s checkpoint was evicted');
  assert.equal(kv.getComputedBlocks(new Sequence('h', [8, 8, 8, 8, 1])).numTokens, 4);
  assert.equal(kv.numStateCheckpoints, 1);
});

test('a sequence\'s checkpoints past its prompt roll: each new one is kept, the one before it evicted first', () => {
  const kv = hybridManager(2);
  const other = new Sequence('o', [9, 9, 9, 9, 9]);
  runStep(kv, other, 4);
  const a = new Sequence('a', [1, 2, 3]);
  runStep(kv, a, 3);
  for (const token of [4, 5, 6, 7, 8, 9]) {
    a.appendToken(token);
    runStep(kv, a, 1);
    copies(kv);
  }
  // a passed two boundaries while decoding (after 4 and 8 tokens): the checkpoint after 4 went
  // first in line, so the one after 8 evicted it, and the other prompt's stayed.
  assert.equal(kv.getComputedBlocks(new Sequence('p', [9, 9, 9, 9, 1])).numTokens, 4);
  assert.equal(kv.getComputedBlocks(new Sequence('q', [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])).numTokens, 8);
  assert.equal(kv.getComputedBlocks(new Sequence('r', [1, 2, 3, 4, 0])).numTokens, 0);
});

test('a sequence freed before its checkpoint\'s fill ran keeps its slot from others until the fill is taken', () => {
  const kv = hybridManager(2);
  const a = new Sequence('a', [1, 2, 3, 4, 5]);
  runStep(kv, a, 4);
  const slot = a.stateSlot;
  kv.free(a);
  for (let i = 0; i < SEQUENCE_SLOTS - 1; i++) assert.equal(kv.allocateSlots(new Sequence(`s${i}`, [i]), 1), true);
  assert.equal(kv.allocateSlots(new Sequence('late', [3]), 1), false, 'a\'s slot is still read by the pending fill');
  assert.deepEqual(copies(kv), [[slot, SEQUENCE_SLOTS]]);
  assert.equal(kv.allocateSlots(new Sequence('late', [3]), 1), true);
});

test('with state checkpoints, prefill chunks end at block boundaries, and decodes and verifications run whole', () => {
  const kv = hybridManager(8, 64);
  const scheduler = new Scheduler({ maxNumSeqs: 4, maxNumBatchedTokens: 11, blockSize: BLOCK_SIZE, maxModelLen: 64 }, kv);
  const seq = new Sequence('a', Array.from({ length: 14 }, (_, i) => i + 1));
  scheduler.add(seq);
  const chunks: number[] = [];
  for (let step = 0; step < 3; step++) {
    const output = scheduler.schedule();
    chunks.push(output.scheduled[0].numNewTokens);
    scheduler.onStepComplete(output);
  }
  // 11 tokens would end inside block 2: 8 run, then 4 (the other 6 would end inside block 3), then the last 2.
  assert.deepEqual(chunks, [8, 4, 2]);
  seq.appendToken(50);
  seq.appendDraftTokens([51, 52, 53]);
  assert.equal(scheduler.schedule().scheduled[0].numNewTokens, 4, 'a verification chunk reaches the sequence\'s end');
  // A prompt filling its last block stops a block short: the same prompt again hits that boundary.
  scheduler.add(new Sequence('b', [9, 8, 7, 6, 5, 4, 3, 2]));
  assert.deepEqual(scheduler.schedule().scheduled.map((s) => s.numNewTokens), [4, 4]);
});
