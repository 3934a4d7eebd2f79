import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createKvPool, int4CodeAt, loadSlot, poolSlots, storeSlot } from './kv-codes.ts';

// The int4 cache's format, element by element: what the CUDA kernels (kv-quantize.cu, the attention
// kernels' staging) must read and write alike.

test('int4 packs value 2i in the low nibble of byte i, with the head\'s (scale, minimum) beside its codes', () => {
  const pool = createKvPool('int4', 3, 2, 4);
  assert.equal(pool.codes.length, 3 * 2 * 4 / 2);
  assert.equal(pool.scales.length, 3 * 2 * 2);
  assert.equal(poolSlots(pool), 3);
  // Head 0 spans -1 .. 2 (scale 0.2): codes 0, 15, 5, 10. Head 1 spans 0 .. 15: its integers.
  storeSlot(pool, 1, Float32Array.of(-1, 2, 0, 1, 0, 15, 7, 8), 0, 1);
  assert.deepEqual([pool.scales[4], pool.scales[5]], [Math.fround(0.2), -1]);
  assert.deepEqual([pool.scales[6], pool.scales[7]], [1, 0]);
  assert.deepEqual(Array.from(pool.codes.subarray(4, 8)), [0xf0, 0xa5, 0xf0, 0x87]);
  assert.deepEqual([0, 1, 2, 3].map((i) => int4CodeAt(pool, 2, i)), [0, 15, 5, 10]);
  const out = new Float32Array(8);
  loadSlot(pool, 1, 1, out, 0);
  assert.deepEqual(Array.from(out), [-1, Math.fround(15 * Math.fround(0.2) - 1), Math.fround(5 * Math.fround(0.2) - 1), Math.fround(10 * Math.fround(0.2) - 1), 0, 15, 7, 8]);
  // The other slots are untouched.
  assert.ok(pool.codes.subarray(0, 4).every((b) => b === 0) && pool.codes.subarray(8).every((b) => b === 0));
});

test('int4 rounds (x - min) / scale to the nearest code, ties to even, and keeps a head of equal values exactly', () => {
  const pool = createKvPool('int4', 1, 1, 4);
  // Range 0 .. 15 (scale 1): 2.5 ties to 2, 3.5 to 4.
  storeSlot(pool, 0, Float32Array.of(0, 2.5, 3.5, 15), 0, 1);
  assert.deepEqual([0, 1, 2, 3].map((i) => int4CodeAt(pool, 0, i)), [0, 2, 4, 15]);
  storeSlot(pool, 0, Float32Array.of(-3.25, -3.25, -3.25, -3.25), 0, 1);
  assert.deepEqual([pool.scales[0], pool.scales[1]], [1, -3.25]);
  const out = new Float32Array(4);
  loadSlot(pool, 0, 1, out, 0);
  assert.deepEqual(Array.from(out), [-3.25, -3.25, -3.25, -3.25]);
});

test('an int4 pool needs rows of an even width', () => {
  assert.throws(() => createKvPool('int4', 2, 1, 3), /two values a byte, so its rows need an even width, not 3/);
});
