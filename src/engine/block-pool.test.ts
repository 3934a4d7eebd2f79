import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BlockPool, type BlockId } from './block-pool.ts';

const ids = (...values: number[]) => values as BlockId[];

test('allocates from the front of the free queue and re-queues freed blocks at the back', () => {
  const pool = new BlockPool(4, false);
  assert.deepEqual(pool.allocate(3), ids(0, 1, 2));
  pool.free(ids(2, 0));
  assert.equal(pool.numFreeBlocks, 3);
  // Block 3 was never taken, then 2 and 0 were freed in that order.
  assert.deepEqual(pool.allocate(3), ids(3, 2, 0));
  assert.equal(pool.numFreeBlocks, 0);
  pool.checkInvariants();
});

test('refuses to allocate more blocks than are free', () => {
  const pool = new BlockPool(2, false);
  pool.allocate(1);
  assert.throws(() => pool.allocate(2), /cannot allocate 2 KV blocks: only 1 are free/);
  assert.equal(pool.numFreeBlocks, 1);
});

test('counts references through touch and free, and rejects a double free', () => {
  const pool = new BlockPool(2, false);
  const [a] = pool.allocate(1);
  pool.touch([a]);
  assert.equal(pool.refCount(a), 2);
  pool.free([a]);
  assert.equal(pool.refCount(a), 1);
  assert.equal(pool.numFreeBlocks, 1);
  pool.free([a]);
  assert.equal(pool.refCount(a), 0);
  assert.equal(pool.numFreeBlocks, 2);
  assert.throws(() => pool.free([a]), /freed more often than it was referenced/);
  pool.checkInvariants();
});

test('a freed cached block stays findable and a hit takes it out of the middle of the free queue', () => {
  const pool = new BlockPool(4, true);
  const [a, b, c] = pool.allocate(3);
  pool.cacheBlock(b, 'hash-b');
  pool.free([a, b, c]);
  assert.equal(pool.lookup('hash-b'), b);
  assert.equal(pool.numFreeBlocks, 4);

  pool.touch([b]);
  assert.equal(pool.refCount(b), 1);
  assert.equal(pool.numFreeBlocks, 3);
  pool.checkInvariants();
  // Free order was 3 (never used), a, c: b is skipped since it is referenced again.
  assert.deepEqual(pool.allocate(3), [3, a, c]);
  assert.equal(pool.lookup('hash-b'), b);
});

test('allocating a cached free block evicts its hash', () => {
  const pool = new BlockPool(2, true);
  const [a, b] = pool.allocate(2);
  pool.cacheBlock(a, 'hash-a');
  pool.cacheBlock(b, 'hash-b');
  pool.free([b, a]);
  assert.equal(pool.numCachedBlocks, 2);
  // The least recently freed block goes first.
  assert.deepEqual(pool.allocate(1), [b]);
  assert.equal(pool.lookup('hash-b'), undefined);
  assert.equal(pool.hashOf(b), undefined);
  assert.equal(pool.lookup('hash-a'), a);
  assert.equal(pool.numCachedBlocks, 1);
  pool.checkInvariants();
});

test('keeps the first block cached under a hash and refuses to re-hash a cached block', () => {
  const pool = new BlockPool(3, true);
  const [a, b] = pool.allocate(2);
  pool.cacheBlock(a, 'same');
  pool.cacheBlock(b, 'same');
  assert.equal(pool.lookup('same'), a);
  assert.equal(pool.hashOf(b), undefined);
  pool.cacheBlock(a, 'same');
  assert.throws(() => pool.cacheBlock(a, 'other'), /cannot re-cache/);
  pool.checkInvariants();
});

test('a pool without caching records no hashes', () => {
  const pool = new BlockPool(2, false);
  const [a] = pool.allocate(1);
  pool.cacheBlock(a, 'hash-a');
  assert.equal(pool.lookup('hash-a'), undefined);
  assert.equal(pool.numCachedBlocks, 0);
});

test('the free queue survives removals at its head, middle and tail', () => {
  const pool = new BlockPool(5, true);
  const blocks = pool.allocate(5);
  blocks.forEach((id) => pool.cacheBlock(id, `h${id}`));
  pool.free(blocks);
  pool.touch(ids(0));
  pool.touch(ids(2));
  pool.touch(ids(4));
  pool.checkInvariants();
  assert.equal(pool.numFreeBlocks, 2);
  pool.free(ids(4, 0, 2));
  pool.checkInvariants();
  assert.deepEqual(pool.allocate(5), ids(1, 3, 4, 0, 2));
});
