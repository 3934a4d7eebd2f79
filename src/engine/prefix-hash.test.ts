import assert from 'node:assert/strict';
import { test } from 'node:test';
import { chainStart, hashBlock } from './prefix-hash.ts';

test('equal prefixes hash equal, whatever array type carries the tokens', () => {
  const first = hashBlock(null, [1, 2, 3, 4]);
  assert.match(first, /^[0-9a-f]{64}$/);
  assert.equal(hashBlock(null, Int32Array.of(1, 2, 3, 4)), first);
  assert.equal(hashBlock(first, [5, 6, 7, 8]), hashBlock(hashBlock(null, [1, 2, 3, 4]), [5, 6, 7, 8]));
});

test('a block hash depends on its tokens, their order and everything before it', () => {
  const parentA = hashBlock(null, [1, 2]);
  const parentB = hashBlock(null, [1, 3]);
  const hashes = [
    hashBlock(parentA, [7, 8]),
    hashBlock(parentB, [7, 8]),
    hashBlock(parentA, [8, 7]),
    hashBlock(null, [7, 8]),
    hashBlock(parentA, [7, 8, 0]),
  ];
  assert.equal(new Set(hashes).size, hashes.length);
});

test('a salt starts a chain of its own; no salt starts the plain chain', () => {
  assert.equal(chainStart(null), null);
  assert.match(chainStart('long') as string, /^[0-9a-f]{64}$/);
  assert.equal(chainStart('long'), chainStart('long'));
  const starts = [null, chainStart('long'), chainStart('short'), chainStart('')];
  assert.equal(new Set(starts.map((start) => hashBlock(start, [1, 2, 3]))).size, starts.length);
});
