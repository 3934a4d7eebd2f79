import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BlockPool, type BlockCopies } from './block-pool.ts';
import { HostPrefixCache } from './host-prefix-cache.ts';
import { KvCacheManager } from './kv-cache-manager.ts';
import { Sequence } from './sequence.ts';

const BLOCK_SIZE = 4;

function manager(numBlocks: number, caching = true): KvCacheManager {
  return new KvCacheManager(new BlockPool(numBlocks, caching), { blockSize: BLOCK_SIZE, enablePrefixCaching: caching, groups: [null], nullBlock: numBlocks });
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
  assert.equal(first.blockTables[0].length, 3);

  const second = new Sequence('b', [...range(100, 8), 7, 7, 7]);
  assert.equal(admit(kv, second), 8);
  assert.deepEqual(second.blockTables[0].slice(0, 2), first.blockTables[0].slice(0, 2));
  assert.notEqual(second.blockTables[0][2], first.blockTables[0][2]);
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
  assert.ok(short.blockTables[0].every((id) => !long.blockTables[0].includes(id)));
  assert.notEqual(short.blockHashes[0], long.blockHashes[0]);
  // Another salted sequence shares the salted blocks, and a fork's child hashes under its parent's salt.
  const again = new Sequence('again', range(0, 9), 9, 'long');
  assert.equal(admit(kv, again), 8);
  assert.deepEqual(again.blockTables[0].slice(0, 2), long.blockTables[0].slice(0, 2));
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
  const firstBlocks = [...first.blockTables[0]];
  kv.free(first);
  assert.equal(kv.numFreeBlocks, 3);

  const again = new Sequence('b', range(0, 9));
  assert.equal(admit(kv, again), 8);
  assert.deepEqual(again.blockTables[0].slice(0, 2), firstBlocks.slice(0, 2));
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
  assert.equal(hungry.numBlocks, 0);
  kv.checkInvariants([]);
});

test('refuses an allocation the pool cannot supply and changes nothing', () => {
  const kv = manager(2, false);
  const seq = new Sequence('a', range(0, 9));
  assert.equal(kv.allocateSlots(seq, 9), false);
  assert.equal(seq.numBlocks, 0);
  assert.equal(kv.numFreeBlocks, 2);
  assert.equal(kv.allocateSlots(seq, 8), true);
  assert.equal(seq.blockTables[0].length, 2);
});

test('chunks extend the block table only as far as the new tokens reach', () => {
  const kv = manager(8);
  const seq = new Sequence('a', range(0, 11));
  runTokens(kv, seq, 3);
  assert.equal(seq.blockTables[0].length, 1);
  runTokens(kv, seq, 1);
  assert.equal(seq.blockTables[0].length, 1);
  runTokens(kv, seq, 5);
  assert.equal(seq.blockTables[0].length, 3);
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
  assert.deepEqual(child.blockTables[0], parent.blockTables[0]);
  const [full, partial] = parent.blockTables[0];
  kv.checkInvariants([parent, child]);

  child.appendToken(40);
  assert.equal(kv.allocateSlots(child, 1), true);
  assert.equal(child.blockTables[0][0], full);
  const copy = child.blockTables[0][1];
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
  assert.deepEqual(parent.blockTables[0], [full, partial]);
  assert.equal(kv.takePendingCopies().src.length, 0);
});

test('with several forks writing in one step, the last holder writes in place', () => {
  const kv = manager(8);
  const parent = new Sequence('a', range(0, 6));
  admit(kv, parent);
  const children = [parent.fork(), parent.fork()];
  for (const child of children) kv.fork(parent, child);
  const partial = parent.blockTables[0][1];
  for (const seq of [parent, ...children]) {
    seq.appendToken(9);
    assert.equal(kv.allocateSlots(seq, 1), true);
  }
  assert.equal(children[1].blockTables[0][1], partial);
  const copies = kv.takePendingCopies();
  assert.deepEqual([...copies.src], [partial, partial]);
  assert.deepEqual([...copies.dst], [parent.blockTables[0][1], children[0].blockTables[0][1]]);
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
  assert.deepEqual(child.blockTables[0].slice(0, 2), parent.blockTables[0]);
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
  return new KvCacheManager(new BlockPool(numBlocks, true), { blockSize: BLOCK_SIZE, enablePrefixCaching: true, groups: [{ sinks, window }], nullBlock: numBlocks });
}

test('with a retention window, blocks wholly behind the window of the next token are freed and named by the null block', () => {
  const kv = windowedManager(16, 6);
  const seq = new Sequence('s', range(0, 30));
  runTokens(kv, seq, 10);
  assert.equal(seq.blockTables[0].length, 3);
  // The token at position 10 reads positions 5..10: block 0 (0..3) is behind, block 1 (4..7) is not.
  runTokens(kv, seq, 1);
  assert.equal(seq.blockTables[0][0], 16, 'block 0 became the null block');
  assert.ok(seq.blockTables[0].slice(1).every((id) => id < 16));
  assert.equal(kv.numFreeBlocks, 16 - 2);
  // Up to position 29, one step at a time: at most three blocks held at any moment.
  for (let p = 11; p < 30; p++) {
    runTokens(kv, seq, 1);
    assert.ok(seq.blockTables[0].filter((id) => id !== 16).length <= kv.blocksHeldAtOnce(30, 1));
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
  assert.equal(first.blockTables[0].filter((id) => id === 16).length, 4, 'positions 0..15 are behind the window of 20');
  const second = new Sequence('b', range(0, 21));
  const computed = kv.getComputedBlocks(second);
  assert.equal(computed.numTokens, 20, 'all five full blocks are still cached');
  const freeBefore = kv.numFreeBlocks;
  assert.equal(kv.allocateSlots(second, 1, computed), true);
  // Position 20 reads 17..20: hits 0..3 (positions 0..15) are left behind, hit 4 is taken, plus one new block.
  assert.deepEqual(second.blockTables[0].slice(0, 4), [16, 16, 16, 16]);
  assert.equal(second.blockTables[0][4], first.blockTables[0][4]);
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
    const held = seq.blockTables[0].filter((id) => id !== 16);
    maxHeld = Math.max(maxHeld, held.length);
    const window = Math.floor((p - 6 + 1) / BLOCK_SIZE);
    seq.blockTables[0].forEach((id, b) => {
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
  assert.equal(second.blockTables[0][0], computed.blocks[0][0]);
  assert.deepEqual(second.blockTables[0].slice(1, 5), [16, 16, 16, 16]);
  assert.equal(second.blockTables[0][5], computed.blocks[0][5]);
  kv.checkInvariants([first, second]);
});

function tieredManager(numBlocks: number, numHostBlocks: number, retention: { sinks: number; window: number } | null = null, swapPool: BlockPool | null = null): KvCacheManager {
  const hostCache = new HostPrefixCache(numHostBlocks);
  return new KvCacheManager(new BlockPool(numBlocks, true), { blockSize: BLOCK_SIZE, enablePrefixCaching: true, groups: [retention], nullBlock: numBlocks, hostCache, swapPool });
}

/** Runs and frees a prompt of other tokens, evicting the least recently used cached blocks to the host; returns the stores. */
function evictWithOtherTokens(kv: KvCacheManager, numTokens: number): BlockCopies {
  const other = new Sequence('other', range(500, numTokens));
  admit(kv, other);
  kv.free(other);
  return kv.takeHostCacheTransfers().store;
}

test('with a host tier, cached blocks evicted from the pool are stored on the host and found there by their hashes', () => {
  const kv = tieredManager(3, 8);
  const first = new Sequence('a', range(0, 9));
  admit(kv, first);
  kv.free(first);
  kv.takeHostCacheTransfers();
  // Another prompt takes all three blocks: the two cached full blocks of 'a' go to the host.
  const stored = evictWithOtherTokens(kv, 12);
  assert.equal(stored.src.length, 2);
  assert.equal(kv.numHostCachedBlocks, 2);
  assert.equal(kv.numCachedBlocks, 3, "the other prompt's blocks, none of 'a''s");
  const again = new Sequence('b', range(0, 9));
  assert.deepEqual(kv.getComputedBlocks(again), { blocks: [[null, null]], numTokens: 8, numHostTokens: 8 });
});

test('host hits get fresh device blocks registered under their hashes, loaded from the host blocks they were stored in', () => {
  const kv = tieredManager(4, 8);
  const first = new Sequence('a', range(0, 9));
  admit(kv, first);
  const hashes = [...first.blockHashes];
  const firstTable = [...first.blockTables[0]];
  kv.free(first);
  const store = evictWithOtherTokens(kv, 16);

  const again = new Sequence('b', range(0, 9));
  const computed = kv.getComputedBlocks(again);
  assert.equal(computed.numHostTokens, 8);
  assert.equal(kv.allocateSlots(again, 1, computed), true);
  const { load } = kv.takeHostCacheTransfers();
  // Each host block that was stored from block i of 'a' is loaded into block i of 'b'.
  assert.deepEqual([...load.dst], again.blockTables[0].slice(0, 2));
  const hostOf = (i: number) => store.dst[[...store.src].indexOf(firstTable[i])];
  assert.deepEqual([...load.src], [hostOf(0), hostOf(1)]);
  // Registered in the device prefix cache: the next hit on them is a device hit.
  const third = new Sequence('c', range(0, 9));
  assert.deepEqual(kv.getComputedBlocks(third), { blocks: [again.blockTables[0].slice(0, 2)], numTokens: 8, numHostTokens: 0 });
  assert.deepEqual(again.blockHashes.slice(0, 2), hashes.slice(0, 2));
  kv.checkInvariants([again]);
});

test('a prefix found partly on the device and partly on the host is hit across both tiers', () => {
  const kv = tieredManager(4, 8);
  const first = new Sequence('a', range(0, 13));
  admit(kv, first);
  const firstTable = [...first.blockTables[0]];
  kv.free(first);
  // Freed tail first: blocks 3, 2, 1, 0 of 'a' in eviction order; a one-block prompt evicts the tail (uncached) ...
  admit(kv, new Sequence('x', [900]));
  // ... and a two-block prompt evicts 'a''s blocks 2 and 1: block 0 stays on the device.
  const y = new Sequence('y', range(700, 5));
  assert.equal(kv.allocateSlots(y, 5), true);
  assert.equal(kv.takeHostCacheTransfers().store.src.length, 2);
  const again = new Sequence('b', range(0, 13));
  const computed = kv.getComputedBlocks(again);
  assert.equal(computed.numTokens, 12);
  assert.equal(computed.numHostTokens, 8);
  assert.equal(computed.blocks[0][0], firstTable[0]);
  assert.deepEqual(computed.blocks[0].map((id) => id === null), [false, true, true]);
});

test('a host hit that no longer fits the pool is refused without taking anything', () => {
  const kv = tieredManager(3, 8);
  const first = new Sequence('a', range(0, 9));
  admit(kv, first);
  kv.free(first);
  const other = new Sequence('other', range(500, 12));
  admit(kv, other);
  kv.takeHostCacheTransfers();
  // 'other' holds every block: 'b''s two host hits and its last token need three.
  const again = new Sequence('b', range(0, 9));
  const computed = kv.getComputedBlocks(again);
  assert.equal(computed.numHostTokens, 8);
  assert.equal(kv.allocateSlots(again, 1, computed), false);
  assert.equal(again.numBlocks, 0);
  assert.equal(kv.takeHostCacheTransfers().load.src.length, 0);
  kv.checkInvariants([other]);
});

test('host hits behind a new sequence\'s retention window are not loaded', () => {
  const kv = tieredManager(6, 16, { sinks: 0, window: 4 });
  const first = new Sequence('a', range(0, 20));
  runTokens(kv, first, 20);
  kv.free(first);
  evictWithOtherTokens(kv, 24);
  const second = new Sequence('b', range(0, 21));
  const computed = kv.getComputedBlocks(second);
  assert.equal(computed.numTokens, 20);
  assert.equal(kv.allocateSlots(second, 1, computed), true);
  // Position 20 reads 17..20: only hit 4 is loaded; hits 0..3 stay null entries.
  assert.deepEqual(second.blockTables[0].slice(0, 4), [6, 6, 6, 6]);
  assert.equal(kv.takeHostCacheTransfers().load.src.length, 1);
  kv.checkInvariants([second]);
});

test('a sequence whose blocks are still being loaded from the host is not swapped out', () => {
  const kv = tieredManager(4, 8, null, new BlockPool(8, false));
  const first = new Sequence('a', range(0, 9));
  admit(kv, first);
  kv.free(first);
  evictWithOtherTokens(kv, 16);
  const again = new Sequence('b', range(0, 9));
  assert.equal(kv.allocateSlots(again, 1, kv.getComputedBlocks(again)), true);
  again.numComputedTokens = 8;
  assert.equal(kv.swapOut(again), false, 'its swap-out would be queued before the load it reads');
  kv.takeHostCacheTransfers();
  assert.equal(kv.swapOut(again), true);
});
