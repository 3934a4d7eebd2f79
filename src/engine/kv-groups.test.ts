import assert from 'node:assert/strict';
import { test } from 'node:test';
import { kvBytesPerBlock, kvCacheGroups, kvStorage, type LayerKvSpec } from '../step/kv-cache-layout.ts';
import { BlockPool } from './block-pool.ts';
import { HostPrefixCache } from './host-prefix-cache.ts';
import { KvCacheManager } from './kv-cache-manager.ts';
import { Sequence } from './sequence.ts';

const BLOCK_SIZE = 4;
const full: LayerKvSpec = { kind: 'attention', numKvHeads: 2, headDim: 8, slidingWindow: null };
const sliding = (window: number): LayerKvSpec => ({ kind: 'attention', numKvHeads: 2, headDim: 8, slidingWindow: window });
const range = (from: number, count: number) => Array.from({ length: count }, (_, i) => from + i);

/** A manager over the groups of `layers` (kvCacheGroups), and the pool's bytes per block (kvStorage). */
function groupedManager(layers: LayerKvSpec[], numBlocks: number, hostBlocks = 0): { kv: KvCacheManager; blockBytes: number } {
  const { retentions, groupOf } = kvCacheGroups(layers, null);
  const kv = new KvCacheManager(new BlockPool(numBlocks, true), {
    blockSize: BLOCK_SIZE,
    enablePrefixCaching: true,
    groups: retentions,
    nullBlock: numBlocks,
    hostCache: hostBlocks > 0 ? new HostPrefixCache(hostBlocks) : null,
  });
  return { kv, blockBytes: kvBytesPerBlock(layers, BLOCK_SIZE, 2, 'auto', groupOf) };
}

function runTokens(kv: KvCacheManager, seq: Sequence, numNewTokens: number): void {
  assert.equal(kv.allocateSlots(seq, numNewTokens), true);
  seq.numComputedTokens += numNewTokens;
  kv.cacheFullBlocks(seq);
}

const heldBlocks = (seq: Sequence, nullBlock: number) => seq.blockTables.flat().filter((id) => id !== nullBlock).length;

test('a model of one attention kind is one KV group, each layer with a pool of its own', () => {
  const layers = [full, full, full];
  assert.deepEqual(kvCacheGroups(layers, null), { retentions: [null], groupOf: [0, 0, 0] });
  assert.deepEqual(kvStorage(layers).poolOf, [0, 1, 2]);
  const slidingOnly = kvCacheGroups([sliding(8), sliding(8)], null);
  assert.deepEqual(slidingOnly.retentions, [{ sinks: 0, window: 8 }]);
});

test('sliding and full layers form groups of the smallest kind\'s size whose layers share pools', () => {
  // Gemma 3's pattern: five sliding layers, then a full one.
  const layers = [sliding(8), sliding(8), sliding(8), sliding(8), sliding(8), full, sliding(8), sliding(8)];
  const { retentions, groupOf } = kvCacheGroups(layers, null);
  // Seven sliding layers in groups of one (the full layers' count): eight groups of one layer.
  assert.equal(retentions.length, 8);
  assert.equal(retentions.filter((r) => r === null).length, 1);
  assert.equal(new Set(groupOf).size, 8);
  // One layer a group: every layer shares the one pool, and a block costs one layer's K/V.
  const storage = kvStorage(layers, groupOf);
  assert.equal(storage.pools.length, 1);
  assert.equal(kvBytesPerBlock(layers, BLOCK_SIZE, 2, 'auto', groupOf), kvBytesPerBlock([full], BLOCK_SIZE, 2));
  // gpt-oss's alternation: two groups of equal size, two pools.
  const alternating = [sliding(8), full, sliding(8), full];
  const halves = kvCacheGroups(alternating, null);
  assert.deepEqual(halves.groupOf, [0, 1, 0, 1]);
  assert.equal(kvStorage(alternating, halves.groupOf).pools.length, 2);
});

test('layers of different specs never share a pool', () => {
  const rows: LayerKvSpec = { kind: 'rows', width: 16 };
  const layers = [sliding(8), full, rows];
  const { groupOf } = kvCacheGroups(layers, null);
  const storage = kvStorage(layers, groupOf);
  assert.equal(storage.pools.length, 2);
  assert.equal(storage.poolOf[0], storage.poolOf[1], 'the sliding and the full layer, in different groups, share');
  assert.notEqual(storage.poolOf[2], storage.poolOf[0]);
});

test('a long sequence over 1 full and 3 sliding layers holds a fraction of the memory one block table would', () => {
  const window = 8;
  const layers = [full, sliding(window), sliding(window), sliding(window)];
  const { kv, blockBytes } = groupedManager(layers, 400);
  const seq = new Sequence('long', range(0, 400));
  let maxHeld = 0;
  for (let done = 0; done < 400; done += 4) {
    runTokens(kv, seq, 4);
    maxHeld = Math.max(maxHeld, heldBlocks(seq, 400));
    kv.checkInvariants([seq]);
  }
  // The full group keeps all 100 blocks; each sliding group only those its window reaches.
  assert.equal(seq.blockTables[0].filter((id) => id !== 400).length, 100);
  for (const table of seq.blockTables.slice(1)) assert.ok(table.filter((id) => id !== 400).length <= 4, `a sliding group holds ${table.length} entries`);
  assert.ok(maxHeld <= kv.blocksHeldAtOnce(400, 4), `held ${maxHeld}, bound ${kv.blocksHeldAtOnce(400, 4)}`);
  const groupedBytes = maxHeld * blockBytes;
  // One block table for every layer keeps every block of every layer.
  const oneTableBytes = 100 * kvBytesPerBlock(layers, BLOCK_SIZE, 2);
  assert.equal(blockBytes * 4, kvBytesPerBlock(layers, BLOCK_SIZE, 2), 'a block holds one layer of each group');
  assert.ok(groupedBytes * 3 < oneTableBytes, `grouped ${groupedBytes} bytes vs ${oneTableBytes} with one table`);
  kv.free(seq);
  assert.equal(kv.numFreeBlocks, 400);
});

test('a prefix hit needs the full group\'s every block but only the sliding group\'s window', () => {
  const layers = [full, sliding(8)];
  const { kv } = groupedManager(layers, 64);
  const first = new Sequence('a', range(0, 40));
  runTokens(kv, first, 40);
  kv.free(first);
  const second = new Sequence('b', range(0, 41));
  const computed = kv.getComputedBlocks(second);
  assert.equal(computed.numTokens, 40);
  // The sliding group reads 33..40 from position 40: blocks 8 and 9 only (block 8 holds 32..35).
  assert.deepEqual(computed.blocks[1].map((id) => id === 64), [true, true, true, true, true, true, true, true, false, false]);
  assert.ok(computed.blocks[0].every((id) => id !== 64 && id !== null));
  assert.equal(kv.allocateSlots(second, 1, computed), true);
  kv.checkInvariants([second]);
});

test('a prefix hit is shortened to where every group has what it reads', () => {
  const layers = [full, sliding(8)];
  const { kv } = groupedManager(layers, 24);
  const first = new Sequence('a', range(0, 40));
  runTokens(kv, first, 40);
  kv.free(first);
  // Another prompt evicts the least recently freed blocks: 'a''s tail, in both groups.
  const other = new Sequence('x', range(900, 16));
  runTokens(kv, other, 16);
  const second = new Sequence('b', range(0, 41));
  const computed = kv.getComputedBlocks(second);
  assert.ok(computed.numTokens < 40);
  // Whatever the run, each group holds what it reads from its end.
  const numHit = computed.numTokens / BLOCK_SIZE;
  computed.blocks[0].forEach((id) => assert.notEqual(id, 24));
  computed.blocks[1].forEach((id, i) => assert.equal(id === 24, i < Math.floor(Math.max(0, computed.numTokens - 8 + 1) / BLOCK_SIZE), `block ${i} of ${numHit}`));
  assert.equal(kv.allocateSlots(second, 41 - computed.numTokens, computed), true);
  kv.checkInvariants([other, second]);
});

test('forks, copy-on-write and swaps move every group\'s blocks', () => {
  const layers = [full, sliding(8)];
  const numBlocks = 64;
  const { retentions } = kvCacheGroups(layers, null);
  const kv = new KvCacheManager(new BlockPool(numBlocks, true), { blockSize: BLOCK_SIZE, enablePrefixCaching: true, groups: retentions, nullBlock: numBlocks, swapPool: new BlockPool(32, false) });
  const parent = new Sequence('p', range(0, 18));
  runTokens(kv, parent, 18);
  const child = parent.fork();
  kv.fork(parent, child);
  kv.checkInvariants([parent, child]);
  // Both write into their shared last block (tokens 16..18 of block 4): each group copies it.
  parent.appendToken(1);
  assert.equal(kv.allocateSlots(parent, 1), true);
  const copies = kv.takePendingCopies();
  assert.equal(copies.src.length, 2, 'one copy per group');
  parent.numComputedTokens++;
  kv.checkInvariants([parent, child]);
  const held = heldBlocks(child, numBlocks);
  child.status = 'swapped';
  assert.equal(kv.swapOut(child), true);
  assert.equal(kv.takeSwaps().out.src.length, held);
  kv.checkInvariants([parent, child]);
  child.status = 'running';
  assert.equal(kv.swapIn(child), true);
  assert.equal(kv.takeSwaps().in.src.length, held);
  kv.checkInvariants([parent, child]);
  kv.free(parent);
  kv.free(child);
  assert.equal(kv.numFreeBlocks, numBlocks);
  assert.equal(kv.numFreeSwapBlocks, 32);
});

test('blocks evicted from every group go to the host tier and come back under their group', () => {
  const layers = [full, sliding(8)];
  const { kv } = groupedManager(layers, 16, 64);
  const first = new Sequence('a', range(0, 24));
  runTokens(kv, first, 24);
  kv.free(first);
  const other = new Sequence('x', range(900, 60));
  runTokens(kv, other, 32);
  kv.free(other);
  assert.ok(kv.takeHostCacheTransfers().store.src.length > 0);
  const again = new Sequence('b', range(0, 25));
  const computed = kv.getComputedBlocks(again);
  assert.equal(computed.numTokens, 24);
  assert.ok(computed.numHostTokens > 0);
  assert.equal(kv.allocateSlots(again, 1, computed), true);
  const { load } = kv.takeHostCacheTransfers();
  // Loads: the full group's host hits and the sliding group's within its window only.
  const loadedFull = computed.blocks[0].filter((id) => id === null).length;
  const loadedSliding = computed.blocks[1].filter((id) => id === null).length;
  assert.equal(load.src.length, loadedFull + loadedSliding);
  assert.ok(loadedSliding <= 3);
  kv.checkInvariants([again]);
});

test('a KV-shared layer stores nothing: it reads the pool and the block tables of the layer it shares', () => {
  const shares = (spec: LayerKvSpec, distance: number): LayerKvSpec => ({ ...spec, sharedKvDistance: distance }) as LayerKvSpec;
  // Gemma 4's small models: the last layers read the last sliding and the last full layer before them.
  const layers = [sliding(8), full, sliding(8), full, shares(sliding(8), 2), shares(full, 2)];
  const { retentions, groupOf } = kvCacheGroups(layers, null);
  assert.deepEqual(retentions, [{ sinks: 0, window: 8 }, null]);
  assert.deepEqual(groupOf, [0, 1, 0, 1, 0, 1]);
  const { pools, poolOf } = kvStorage(layers, groupOf);
  assert.equal(pools.length, 2, 'one pool per layer of a group, the groups sharing them');
  assert.deepEqual(poolOf, [0, 0, 1, 1, poolOf[2], poolOf[3]]);
  const unshared = [sliding(8), full, sliding(8), full];
  assert.equal(kvBytesPerBlock(layers, BLOCK_SIZE, 2, 'auto', groupOf), kvBytesPerBlock(unshared, BLOCK_SIZE, 2, 'auto', groupOf.slice(0, 4)));
  assert.throws(() => kvStorage([full, shares(sliding(8), 2)]), /layer 1 shares the keys and values of layer -1/);
  assert.throws(() => kvStorage([{ ...full, numKvHeads: 1 }, shares(full, 1)]), /not an attention layer of its kv heads and head dim/);
});

test('layers of different retentions storing different shapes keep one block table, retaining what every layer reads', () => {
  const wideFull: LayerKvSpec = { kind: 'attention', numKvHeads: 1, headDim: 16, slidingWindow: null };
  assert.deepEqual(kvCacheGroups([sliding(8), sliding(8), wideFull], null), { retentions: [null], groupOf: [0, 0, 0] });
  const narrow: LayerKvSpec = { kind: 'attention', numKvHeads: 1, headDim: 8, slidingWindow: 4 };
  assert.deepEqual(kvCacheGroups([sliding(8), narrow], null), { retentions: [{ sinks: 0, window: 8 }], groupOf: [0, 0] });
});
