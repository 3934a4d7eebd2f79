import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AFFINITY_SLACK, blockHashes, ReplicaRouter, type ReplicaLoad } from './replica-router.ts';

const BLOCK = 4;
const idle = (n: number): ReplicaLoad[] => Array.from({ length: n }, () => ({ alive: true, outstanding: 0, kvUsage: 0 }));
const prompt = (tokens: number[], lora: string | null = null) => ({ tokenIds: tokens, lora });
const range = (from: number, length: number) => Array.from({ length }, (_, i) => from + i);

test('block hashes chain: equal prefixes hash alike block by block, a change alters every later block, an adapter alters all', () => {
  const a = blockHashes(prompt(range(0, 10)), BLOCK);
  assert.equal(a.length, 2, 'only full blocks');
  const b = blockHashes(prompt([...range(0, 8), 99, 98, 97, 96]), BLOCK);
  assert.deepEqual(b.slice(0, 2), a);
  const c = blockHashes(prompt([0, 1, 2, 50, ...range(4, 8)]), BLOCK);
  assert.ok(c.every((h, i) => h !== a[i] || i >= a.length));
  assert.ok(blockHashes(prompt(range(0, 8), 'adapter'), BLOCK).every((h, i) => h !== a[i]));
});

test('a prompt goes where its leading blocks went, the longest run winning', () => {
  const router = new ReplicaRouter(3, BLOCK, 100);
  const loads = idle(3);
  assert.deepEqual(router.route(prompt(range(0, 8)), loads), { replica: 0, reason: 'load', matchedBlocks: 0 });
  assert.deepEqual(router.route(prompt(range(100, 8)), loads), { replica: 1, reason: 'load', matchedBlocks: 0 }, 'unrelated ones take turns');
  assert.deepEqual(router.route(prompt([...range(0, 4), 7, 7, 7, 7]), loads), { replica: 0, reason: 'prefix', matchedBlocks: 1 });
  assert.deepEqual(router.route(prompt([...range(100, 8), 5, 5, 5, 5]), loads), { replica: 1, reason: 'prefix', matchedBlocks: 2 });
  assert.equal(router.route(prompt([1, 2]), loads).reason, 'load', 'shorter than a block: no affinity');
});

test('a holder loaded past the slack spills to the least pressed replica, which then holds the prefix too', () => {
  const router = new ReplicaRouter(2, BLOCK, 100);
  const shared = range(0, 8);
  assert.equal(router.route(prompt(shared), idle(2)).replica, 0);
  const busy = (outstanding: number): ReplicaLoad[] => [{ alive: true, outstanding, kvUsage: 0 }, { alive: true, outstanding: 0, kvUsage: 0 }];
  assert.equal(router.route(prompt(shared), busy(AFFINITY_SLACK * 100)).reason, 'prefix', 'within the slack');
  assert.deepEqual(router.route(prompt(shared), busy(AFFINITY_SLACK * 100 + 1)), { replica: 1, reason: 'load', matchedBlocks: 0 });
  const fullPool: ReplicaLoad[] = [{ alive: true, outstanding: 0, kvUsage: 0 }, { alive: true, outstanding: 0, kvUsage: 0.9 }];
  assert.deepEqual(router.route(prompt(shared), fullPool), { replica: 0, reason: 'prefix', matchedBlocks: 2 }, 'a full KV pool counts as pressure');
  assert.equal(router.route(prompt(shared), idle(2)).reason, 'prefix');
});

test('a dead replica is never chosen, a sticky one is while it lives and is not overloaded, and none alive throws', () => {
  const router = new ReplicaRouter(2, BLOCK, 100);
  const shared = range(0, 8);
  router.route(prompt(shared), idle(2));
  const deadFirst: ReplicaLoad[] = [{ alive: false, outstanding: 0, kvUsage: 0 }, { alive: true, outstanding: 50, kvUsage: 0 }];
  assert.deepEqual(router.route(prompt(shared), deadFirst), { replica: 1, reason: 'load', matchedBlocks: 0 });
  assert.equal(router.route(prompt(range(200, 8)), idle(2), 1).reason, 'sticky');
  assert.equal(router.route(prompt(range(200, 8)), idle(2), 1).replica, 1);
  assert.equal(router.route(prompt(range(300, 8)), deadFirst, 0).replica, 1, 'a dead sticky replica is passed over');
  assert.throws(() => router.route(prompt(shared), [{ alive: false, outstanding: 0, kvUsage: 0 }, { alive: false, outstanding: 0, kvUsage: 0 }]), /no replica is alive/);
});

test('a restarted replica is forgotten as a holder: its prefixes go by load, and the other holders keep theirs', () => {
  const router = new ReplicaRouter(2, BLOCK, 100);
  const mine = range(0, 8);
  const shared = range(500, 8);
  assert.equal(router.route(prompt(mine), idle(2)).replica, 0);
  assert.equal(router.route(prompt(shared), idle(2)).replica, 1);
  // Replica 1 spills the shared prefix onto replica 0 too: both hold it.
  assert.equal(router.route(prompt(shared), [{ alive: true, outstanding: 0, kvUsage: 0 }, { alive: true, outstanding: 90, kvUsage: 0 }]).replica, 0);
  router.forget(0);
  assert.deepEqual(router.route(prompt(shared), idle(2)), { replica: 1, reason: 'prefix', matchedBlocks: 2 }, 'the other holder keeps the shared prefix');
  assert.equal(router.route(prompt(mine), idle(2)).reason, 'load', 'what only replica 0 held is gone');
});
