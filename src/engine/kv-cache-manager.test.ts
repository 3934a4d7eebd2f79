import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BlockPool } from './block-pool.ts';
import { KvCacheManager } from './kv-cache-manager.ts';
import { Sequence } from './sequence.ts';

const BLOCK_SIZE = 4;

function manager(numBlocks: number, caching = true): KvCacheManager {
  return new KvCacheManager(new BlockPool(numBlocks, caching), BLOCK_SIZE, caching);
}

const range = (from: number, count: number) => Array.from({ length: count }, (_, i) => from + i);

/** What one engine step does for a sequence: allocate, "compute" the tokens, cache full blocks. */
function runTokens(kv: KvCacheManager, seq: Sequence, numNewTokens: number): void {
  assert.equal(kv.allocateSlots(seq, numNewTokens), true);
  seq.numComputedTokens += numNewTokens;
  kv.cacheFullBlocks(seq);
}

/** Admits a fresh sequence with its prefix hits and runs the rest of its tokens. */
function admit(kv: KvCacheManager, seq: Sequence): number {
  const computed = kv.getComputedBlocks(seq);
  assert.equal(kv.allocateSlots(seq, seq.numTokens - computed.numTokens, computed), true);
  seq.numComputedTokens = seq.numTokens;
  kv.cacheFullBlocks(seq);
  return computed.numTokens;
}

test('a sequence sharing a prefix reuses the cached full blocks', () => {
  const kv = manager(8);
  const first = new Sequence('a', range(100, 10));
  assert.equal(admit(kv, first), 0);
  assert.equal(first.blockTable.length, 3);

  const second = new Sequence('b', [...range(100, 8), 7, 7, 7]);
  assert.equal(admit(kv, second), 8);
  assert.deepEqual(second.blockTable.slice(0, 2), first.blockTable.slice(0, 2));
  assert.notEqual(second.blockTable[2], first.blockTable[2]);
  assert.equal(kv.numFreeBlocks, 8 - 4);
  kv.checkInvariants([first, second]);
});

test('prefix hits stop at the first differing block, even if later blocks match', () => {
  const kv = manager(8);
  admit(kv, new Sequence('a', range(0, 12)));
  const differsInBlock1 = new Sequence('b', [...range(0, 4), 99, ...range(5, 7), 5]);
  assert.equal(kv.getComputedBlocks(differsInBlock1).numTokens, 4);
});

test('prefix hits leave at least one token to compute', () => {
  const kv = manager(8);
  admit(kv, new Sequence('a', range(0, 9)));
  assert.equal(kv.getComputedBlocks(new Sequence('exact', range(0, 8))).numTokens, 4);
  assert.equal(kv.getComputedBlocks(new Sequence('one more', range(0, 9))).numTokens, 8);
  assert.equal(kv.getComputedBlocks(new Sequence('single', [0])).numTokens, 0);
});

test('blocks of a freed sequence stay hit-able until they are reallocated', () => {
  const kv = manager(3);
  const first = new Sequence('a', range(0, 9));
  admit(kv, first);
  const firstBlocks = [...first.blockTable];
  kv.free(first);
  assert.equal(kv.numFreeBlocks, 3);

  const again = new Sequence('b', range(0, 9));
  assert.equal(admit(kv, again), 8);
  assert.deepEqual(again.blockTable.slice(0, 2), firstBlocks.slice(0, 2));
  kv.checkInvariants([again]);
  kv.free(again);

  // The tail block was freed first, so it is evicted first; the two full blocks survive.
  const other = new Sequence('c', [50]);
  admit(kv, other);
  assert.equal(kv.getComputedBlocks(new Sequence('d', range(0, 9))).numTokens, 8);
});

test('hits revived from the free queue count against the free blocks', () => {
  const kv = manager(3);
  const first = new Sequence('a', range(0, 8));
  admit(kv, first);
  kv.free(first);
  const hungry = new Sequence('b', [...range(0, 4), ...range(200, 9)]);
  const computed = kv.getComputedBlocks(hungry);
  assert.equal(computed.numTokens, 4);
  // 13 tokens need 4 blocks, the pool has 3: refused without touching anything.
  assert.equal(kv.allocateSlots(hungry, 9, computed), false);
  assert.equal(kv.numFreeBlocks, 3);
  assert.deepEqual(hungry.blockTable, []);
  kv.checkInvariants([]);
});

test('refuses an allocation the pool cannot supply and changes nothing', () => {
  const kv = manager(2, false);
  const seq = new Sequence('a', range(0, 9));
  assert.equal(kv.allocateSlots(seq, 9), false);
  assert.deepEqual(seq.blockTable, []);
  assert.equal(kv.numFreeBlocks, 2);
  assert.equal(kv.allocateSlots(seq, 8), true);
  assert.equal(seq.blockTable.length, 2);
});

test('chunks extend the block table only as far as the new tokens reach', () => {
  const kv = manager(8);
  const seq = new Sequence('a', range(0, 11));
  runTokens(kv, seq, 3);
  assert.equal(seq.blockTable.length, 1);
  runTokens(kv, seq, 1);
  assert.equal(seq.blockTable.length, 1);
  runTokens(kv, seq, 5);
  assert.equal(seq.blockTable.length, 3);
  kv.checkInvariants([seq]);
});

test('only fully computed blocks are cached', () => {
  const kv = manager(8);
  const seq = new Sequence('a', range(0, 12));
  runTokens(kv, seq, 6);
  assert.equal(kv.numCachedBlocks, 1);
  assert.equal(kv.getComputedBlocks(new Sequence('b', range(0, 12))).numTokens, 4);
  runTokens(kv, seq, 6);
  assert.equal(kv.numCachedBlocks, 3);
});

test('without prefix caching nothing is hashed or hit', () => {
  const kv = manager(8, false);
  const seq = new Sequence('a', range(0, 9));
  admit(kv, seq);
  assert.deepEqual(seq.blockHashes, []);
  assert.equal(kv.numCachedBlocks, 0);
  assert.equal(kv.getComputedBlocks(new Sequence('b', range(0, 9))).numTokens, 0);
});

test('a forked child writing into the shared last block gets a copy of it', () => {
  const kv = manager(8);
  const parent = new Sequence('a', range(0, 6));
  admit(kv, parent);
  const child = parent.fork();
  kv.fork(parent, child);
  assert.deepEqual(child.blockTable, parent.blockTable);
  const [full, partial] = parent.blockTable;
  kv.checkInvariants([parent, child]);

  child.appendToken(40);
  assert.equal(kv.allocateSlots(child, 1), true);
  assert.equal(child.blockTable[0], full);
  const copy = child.blockTable[1];
  assert.notEqual(copy, partial);
  kv.checkInvariants([parent, child]);

  const copies = kv.takePendingCopies();
  assert.deepEqual([...copies.src], [partial]);
  assert.deepEqual([...copies.dst], [copy]);
  assert.equal(kv.takePendingCopies().src.length, 0);
  kv.checkInvariants([parent, child]);

  // The parent is now the block's only holder and writes into it in place.
  parent.appendToken(41);
  assert.equal(kv.allocateSlots(parent, 1), true);
  assert.deepEqual(parent.blockTable, [full, partial]);
  assert.equal(kv.takePendingCopies().src.length, 0);
});

test('with several forks writing in one step, the last holder writes in place', () => {
  const kv = manager(8);
  const parent = new Sequence('a', range(0, 6));
  admit(kv, parent);
  const children = [parent.fork(), parent.fork()];
  for (const child of children) kv.fork(parent, child);
  const partial = parent.blockTable[1];
  for (const seq of [parent, ...children]) {
    seq.appendToken(9);
    assert.equal(kv.allocateSlots(seq, 1), true);
  }
  assert.equal(children[1].blockTable[1], partial);
  const copies = kv.takePendingCopies();
  assert.deepEqual([...copies.src], [partial, partial]);
  assert.deepEqual([...copies.dst], [parent.blockTable[1], children[0].blockTable[1]]);
  kv.checkInvariants([parent, ...children]);
});

test('a block full at the fork is shared, never copied', () => {
  const kv = manager(8);
  const parent = new Sequence('a', range(0, 8));
  admit(kv, parent);
  const child = parent.fork();
  kv.fork(parent, child);
  child.appendToken(1);
  assert.equal(kv.allocateSlots(child, 1), true);
  assert.deepEqual(child.blockTable.slice(0, 2), parent.blockTable);
  assert.equal(kv.takePendingCopies().src.length, 0);
});

test('freeing a sequence drops its pending copy and releases the source', () => {
  const kv = manager(8);
  const parent = new Sequence('a', range(0, 6));
  admit(kv, parent);
  const child = parent.fork();
  kv.fork(parent, child);
  child.appendToken(3);
  assert.equal(kv.allocateSlots(child, 1), true);
  kv.free(child);
  kv.checkInvariants([parent]);
  assert.equal(kv.takePendingCopies().src.length, 0);
  assert.equal(kv.numFreeBlocks, 6);
});

test('freeing every sequence returns every block', () => {
  const kv = manager(6);
  const a = new Sequence('a', range(0, 7));
  admit(kv, a);
  const b = new Sequence('b', range(0, 5));
  admit(kv, b);
  const c = a.fork();
  kv.fork(a, c);
  c.appendToken(1);
  runTokens(kv, c, 1);
  kv.takePendingCopies();
  kv.checkInvariants([a, b, c]);
  for (const seq of [b, a, c]) kv.free(seq);
  assert.equal(kv.numFreeBlocks, 6);
  kv.checkInvariants([]);
});
