import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BlockPool } from './block-pool.ts';
import { KvCacheManager } from './kv-cache-manager.ts';
import { Sequence } from './sequence.ts';

const BLOCK_SIZE = 4;

function manager(numBlocks: number, caching = true): KvCacheManager {
  return new KvCacheManager(new BlockPool(numBlocks, caching), { blockSize: BLOCK_SIZE, enablePrefixCaching: caching, retention: null, nullBlock: numBlocks });
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

test('sequences of different cache salts never share blocks; equal salts do, forks keep theirs', () => {
  const kv = manager(16);
  const long = new Sequence('long', range(0, 10), 10, 'long');
  assert.equal(admit(kv, long), 0);
  // Same leading tokens, no salt (a short prompt): none of the long prompt's blocks are its own.
  const short = new Sequence('short', range(0, 9));
  assert.equal(admit(kv, short), 0);
  assert.ok(short.blockTable.every((id) => !long.blockTable.includes(id)));
  assert.notEqual(short.blockHashes[0], long.blockHashes[0]);
  // Another salted sequence shares the salted blocks, and a fork's child hashes under its parent's salt.
  const again = new Sequence('again', range(0, 9), 9, 'long');
  assert.equal(admit(kv, again), 8);
  assert.deepEqual(again.blockTable.slice(0, 2), long.blockTable.slice(0, 2));
  const child = again.fork();
  assert.equal(child.cacheSalt, 'long');
  kv.fork(again, child);
  kv.checkInvariants([long, short, again, child]);
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

function windowedManager(numBlocks: number, window: number, sinks = 0): KvCacheManager {
  return new KvCacheManager(new BlockPool(numBlocks, true), { blockSize: BLOCK_SIZE, enablePrefixCaching: true, retention: { sinks, window }, nullBlock: numBlocks });
}

test('with a retention window, blocks wholly behind the window of the next token are freed and named by the null block', () => {
  const kv = windowedManager(16, 6);
  const seq = new Sequence('s', range(0, 30));
  runTokens(kv, seq, 10);
  assert.equal(seq.blockTable.length, 3);
  // The token at position 10 reads positions 5..10: block 0 (0..3) is behind, block 1 (4..7) is not.
  runTokens(kv, seq, 1);
  assert.equal(seq.blockTable[0], 16, 'block 0 became the null block');
  assert.ok(seq.blockTable.slice(1).every((id) => id < 16));
  assert.equal(kv.numFreeBlocks, 16 - 2);
  // Up to position 29, one step at a time: at most three blocks held at any moment.
  for (let p = 11; p < 30; p++) {
    runTokens(kv, seq, 1);
    assert.ok(seq.blockTable.filter((id) => id !== 16).length <= kv.blocksHeldAtOnce(30, 1));
  }
  assert.equal(kv.blocksHeldAtOnce(30, 1), 3);
  kv.checkInvariants([seq]);
  kv.free(seq);
  assert.equal(kv.numFreeBlocks, 16);
  kv.checkInvariants([]);
});

test('freed window blocks stay in the prefix cache, and hits behind a new sequence\'s window are not taken', () => {
  const kv = windowedManager(16, 4);
  const first = new Sequence('a', range(0, 20));
  runTokens(kv, first, 20);
  runTokens(kv, first, 0);
  assert.equal(first.blockTable.filter((id) => id === 16).length, 4, 'positions 0..15 are behind the window of 20');
  const second = new Sequence('b', range(0, 21));
  const computed = kv.getComputedBlocks(second);
  assert.equal(computed.numTokens, 20, 'all five full blocks are still cached');
  const freeBefore = kv.numFreeBlocks;
  assert.equal(kv.allocateSlots(second, 1, computed), true);
  // Position 20 reads 17..20: hits 0..3 (positions 0..15) are left behind, hit 4 is taken, plus one new block.
  assert.deepEqual(second.blockTable.slice(0, 4), [16, 16, 16, 16]);
  assert.equal(second.blockTable[4], first.blockTable[4]);
  assert.equal(kv.numFreeBlocks, freeBefore - 1);
  kv.checkInvariants([first, second]);
});

test('a fork shares the parent\'s live blocks; null entries are neither shared nor freed', () => {
  const kv = windowedManager(16, 4);
  const parent = new Sequence('p', range(0, 12));
  runTokens(kv, parent, 12);
  runTokens(kv, parent, 0);
  const child = new Sequence('c', range(0, 12));
  kv.fork(parent, child);
  kv.checkInvariants([parent, child]);
  kv.free(parent);
  kv.free(child);
  assert.equal(kv.numFreeBlocks, 16);
  kv.checkInvariants([]);
});

test('with StreamingLLM sinks, the sinks\' blocks stay and only blocks between them and the window are freed', () => {
  // Sinks 5 (blocks 0 and 1: positions 0..7), window 6.
  const kv = windowedManager(16, 6, 5);
  const seq = new Sequence('s', range(0, 60));
  runTokens(kv, seq, 16);
  let maxHeld = 0;
  for (let p = 16; p < 60; p++) {
    runTokens(kv, seq, 1);
    const held = seq.blockTable.filter((id) => id !== 16);
    maxHeld = Math.max(maxHeld, held.length);
    const window = Math.floor((p - 6 + 1) / BLOCK_SIZE);
    seq.blockTable.forEach((id, b) => {
      const kept = b < 2 || b >= window;
      assert.equal(id !== 16, kept, `position ${p}: block ${b} ${kept ? 'is kept' : 'is freed'}`);
    });
    kv.checkInvariants([seq]);
  }
  assert.ok(maxHeld <= kv.blocksHeldAtOnce(60, 1), `held ${maxHeld}, bound ${kv.blocksHeldAtOnce(60, 1)}`);
  assert.equal(kv.blocksHeldAtOnce(60, 1), 2 + 2 + 1);
  kv.free(seq);
  assert.equal(kv.numFreeBlocks, 16);
  kv.checkInvariants([]);
});

test('a prefix hit under StreamingLLM takes the sinks\' blocks and those of the window, not the ones between', () => {
  const kv = windowedManager(16, 4, 2);
  const first = new Sequence('a', range(0, 24));
  runTokens(kv, first, 24);
  runTokens(kv, first, 0);
  const second = new Sequence('b', range(0, 25));
  const computed = kv.getComputedBlocks(second);
  assert.equal(computed.numTokens, 24, 'all six full blocks are still cached');
  assert.equal(kv.allocateSlots(second, 1, computed), true);
  // Position 24 reads 21..24 and the sinks 0..1: hit 0 and hit 5 are taken, hits 1..4 are left behind.
  assert.equal(second.blockTable[0], computed.blocks[0]);
  assert.deepEqual(second.blockTable.slice(1, 5), [16, 16, 16, 16]);
  assert.equal(second.blockTable[5], computed.blocks[5]);
  kv.checkInvariants([first, second]);
});
