import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { BlockId } from './block-pool.ts';
import { HostPrefixCache } from './host-prefix-cache.ts';

const id = (n: number) => n as BlockId;
/** A tier of `capacity` blocks holding the given hashes, stored in order from device blocks 1, 2, ...; its transfers taken. */
function tierHolding(capacity: number, hashes: string[]): HostPrefixCache {
  const host = new HostPrefixCache(capacity);
  hashes.forEach((hash, i) => host.store(id(i + 1), hash));
  host.takeTransfers();
  return host;
}

/** Hands out device blocks 100, 101, ... as a device pool would. */
function devicePool(): (count: number) => BlockId[] {
  let next = 100;
  return (count) => Array.from({ length: count }, () => id(next++));
}

test('stores copy evicted device blocks into host blocks, and a full tier evicts its least recently used', () => {
  const host = new HostPrefixCache(2);
  host.store(id(7), 'a');
  host.store(id(3), 'b');
  assert.equal(host.numCachedBlocks, 2);
  // 'a' was stored first: a third block evicts it.
  host.store(id(5), 'c');
  assert.equal(host.has('a'), false);
  assert.ok(host.has('b') && host.has('c'));
  assert.equal(host.numCachedBlocks, 2, 'the tier never holds more than its capacity');
  const { store, load } = host.takeTransfers();
  assert.deepEqual([...store.src], [7, 3, 5]);
  // 'c' took over the host block 'a' had: the stream copies in order, so it ends with 'c'.
  assert.deepEqual([...store.dst], [0, 1, 0]);
  assert.equal(load.src.length, 0);
  host.checkInvariants();
});

test('storing a hash the tier holds copies nothing and makes it the most recently used', () => {
  const host = tierHolding(2, ['a', 'b']);
  host.store(id(9), 'a');
  assert.equal(host.takeTransfers().store.src.length, 0, 'no copy of content the host already has');
  host.store(id(3), 'c');
  assert.ok(host.has('a'), "'a' was used last, so 'b' is evicted");
  assert.equal(host.has('b'), false);
});

test('loads copy host blocks into fresh device blocks and keep them, most recently used', () => {
  const host = tierHolding(3, ['a', 'b', 'c']);
  const devices = host.load(['a'], devicePool());
  assert.deepEqual(devices, [100]);
  assert.ok(host.isLoading(id(100)));
  const { load } = host.takeTransfers();
  assert.deepEqual([...load.src], [0]);
  assert.deepEqual([...load.dst], [100]);
  assert.equal(host.isLoading(id(100)), false, 'a load is queued once its transfers are taken');
  assert.ok(host.has('a'), 'the host copy stays: the device copy may be evicted again');
  host.store(id(4), 'd');
  assert.equal(host.has('b'), false, "'b' is now the least recently used");
  assert.ok(host.has('a'));
  host.checkInvariants();
});

test('a load holds its host blocks against stores made by its own allocation, and a full tier of held blocks drops stores', () => {
  const host = tierHolding(2, ['a', 'b']);
  // Allocating the device blocks evicts two cached device blocks, stored here: neither may take
  // the host blocks being loaded from.
  const devices = host.load(['a', 'b'], (count) => {
    host.store(id(50), 'x');
    host.store(id(51), 'y');
    return devicePool()(count);
  });
  assert.deepEqual(devices, [100, 101]);
  assert.ok(host.has('a') && host.has('b'));
  assert.equal(host.has('x') || host.has('y'), false, 'stores are dropped while every host block is held');
  host.checkInvariants();
  const { store, load } = host.takeTransfers();
  assert.equal(store.src.length, 0);
  assert.deepEqual([...load.src].sort(), [0, 1]);
  host.checkInvariants();
  // Released: they can be evicted again.
  host.store(id(52), 'z');
  assert.ok(host.has('z'));
});

test('loading a hash the tier does not hold is an error naming it', () => {
  const host = new HostPrefixCache(1);
  assert.throws(() => host.load(['missing'], devicePool()), /no block is cached as missing/);
});
