import assert from 'node:assert/strict';
import { test } from 'node:test';
import { kvBytesPerBlock, kvCacheGroups, stateBytesPerSlot, type LayerKvSpec } from '../step/kv-cache-layout.ts';
import { BlockPool } from './block-pool.ts';
import { KvCacheManager } from './kv-cache-manager.ts';
import { Sequence } from './sequence.ts';
import { StateSlotPool } from './state-slots.ts';

const full: LayerKvSpec = { kind: 'attention', numKvHeads: 2, headDim: 8, slidingWindow: null };
const state: LayerKvSpec = { kind: 'state', convElements: 12, recurrentElements: 64 };
const hybrid = [state, state, state, full];

function stateManager(numBlocks: number, stateSlots: number): KvCacheManager {
  return new KvCacheManager(new BlockPool(numBlocks, false), { blockSize: 4, enablePrefixCaching: false, groups: kvCacheGroups(hybrid, null).retentions, nullBlock: numBlocks, stateSlots });
}

test('a state layer costs nothing per block, joins the full layers\' KV group, and its slot holds conv and recurrent values in float32', () => {
  assert.equal(kvBytesPerBlock(hybrid, 16, 2), kvBytesPerBlock([full], 16, 2));
  assert.deepEqual(kvCacheGroups(hybrid, null).retentions, [null]);
  assert.equal(stateBytesPerSlot(hybrid), 3 * 4 * (12 + 64));
});

test('a sequence holds a state slot from its first allocation until it is freed, and waits while every slot is held', () => {
  const kv = stateManager(16, 2);
  const [a, b, c] = [new Sequence('a', [3, 4, 5]), new Sequence('b', [3, 4]), new Sequence('c', [3])];
  assert.equal(kv.allocateSlots(a, 3), true);
  assert.equal(kv.allocateSlots(b, 2), true);
  assert.notEqual(a.stateSlot, b.stateSlot);
  const slotOfA = a.stateSlot;
  // A decode keeps the slot it has.
  a.numComputedTokens = 3;
  a.appendToken(6);
  assert.equal(kv.allocateSlots(a, 1), true);
  assert.equal(a.stateSlot, slotOfA);
  assert.equal(kv.allocateSlots(c, 1), false, 'no slot is free: c must wait, holding no blocks');
  assert.equal(c.numBlocks, 0);
  kv.free(a);
  assert.equal(a.stateSlot, -1);
  assert.equal(kv.allocateSlots(c, 1), true);
  assert.equal(c.stateSlot, slotOfA);
  assert.equal(kv.numFreeStateSlots, 0);
});

test('a fork takes a slot of its own filled from its parent\'s, or nothing when every slot is held', () => {
  const kv = stateManager(16, 3);
  const parent = new Sequence('p', [3, 4]);
  assert.equal(kv.allocateSlots(parent, 2), true);
  parent.numComputedTokens = 2;
  const [child, second, third] = [parent.fork(), parent.fork(), parent.fork()];
  assert.equal(kv.fork(parent, child), true);
  assert.equal(kv.fork(parent, second), true);
  assert.deepEqual(child.blockTables, parent.blockTables, 'blocks are shared as for any fork');
  assert.equal(new Set([parent.stateSlot, child.stateSlot, second.stateSlot]).size, 3);
  assert.equal(kv.fork(parent, third), false, 'no slot is left: the third child gets nothing and recomputes');
  assert.deepEqual([third.stateSlot, third.numBlocks], [-1, 0]);
  // The second child is aborted before its copy ran: the copy is dropped and its slot is free at once.
  kv.free(second);
  assert.equal(kv.numFreeStateSlots, 1);
  const copies = kv.takeStateCopies();
  assert.deepEqual([Array.from(copies.src), Array.from(copies.dst)], [[parent.stateSlot], [child.stateSlot]]);
  assert.deepEqual(Array.from(kv.takeStateCopies().src), [], 'each copy is taken once');
});

test('a parent freed before its child\'s copy ran keeps its slot from other sequences until the copy is taken', () => {
  const kv = stateManager(16, 2);
  const parent = new Sequence('p', [3, 4]);
  assert.equal(kv.allocateSlots(parent, 2), true);
  parent.numComputedTokens = 2;
  const child = parent.fork();
  assert.equal(kv.fork(parent, child), true);
  const slotOfParent = parent.stateSlot;
  kv.free(parent);
  const late = new Sequence('late', [7]);
  assert.equal(kv.allocateSlots(late, 1), false, 'the parent\'s slot is still read by the pending copy');
  assert.equal(kv.numFreeStateSlots, 1, 'no sequence holds it');
  assert.deepEqual(Array.from(kv.takeStateCopies().src), [slotOfParent]);
  assert.equal(kv.allocateSlots(late, 1), true);
  assert.equal(late.stateSlot, slotOfParent);
});

test('state slots refuse swapping, and prefix caching without state checkpoints', () => {
  assert.throws(
    () => new KvCacheManager(new BlockPool(8, true), { blockSize: 4, enablePrefixCaching: true, groups: [null], nullBlock: 8, stateSlots: 1 }),
    /needs state checkpoints/,
  );
  assert.throws(
    () => new KvCacheManager(new BlockPool(8, false), { blockSize: 4, enablePrefixCaching: false, groups: [null], nullBlock: 8, stateSlots: 1, swapPool: new BlockPool(4, false) }),
    /rule out swapping/,
  );
});

test('the slot pool hands out each slot once and takes back only held ones', () => {
  const pool = new StateSlotPool(2);
  const first = pool.take();
  const second = pool.take();
  assert.deepEqual([first, second].sort(), [0, 1]);
  assert.equal(pool.take(), null);
  pool.release(first!);
  assert.throws(() => pool.release(first!), /not held/);
  assert.equal(pool.take(), first);
});
