import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ropeAndCacheWrite } from './rope-cache-write.ts';
import { KeelError } from '../../../errors.ts';
import { TestRandom, testSeed } from '../../../../test/helpers/cpu-random.ts';
import { plainRopeTable } from '../../../../test/helpers/cpu-random-llama.ts';
import { float32Pool } from './kv-codes.ts';

const random = new TestRandom(testSeed('rope-cache-write'));

// Pairs (x[i], x[i + half]) as complex numbers times e^(i * angle): rotate_half RoPE.
function naiveRotate(head: Float32Array, cos: ArrayLike<number>, sin: ArrayLike<number>): number[] {
  const half = head.length / 2;
  const out = Array.from(head);
  for (let i = 0; i < half; i++) {
    const re = head[i], im = head[half + i];
    out[i] = re * cos[i] - im * sin[i];
    out[half + i] = re * sin[i] + im * cos[i];
  }
  return out;
}

function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string): void {
  for (let i = 0; i < expected.length; i++) {
    assert.ok(Math.abs(actual[i] - expected[i]) <= 1e-6 * Math.max(1, Math.abs(expected[i])), `${what}[${i}]: ${actual[i]} vs ${expected[i]}`);
  }
}

for (const headDim of [2, 8, 64, 96, 128]) {
  for (const [numHeads, numKvHeads] of [[4, 4], [4, 2], [8, 2], [4, 1]]) {
    test(`rotates q and k heads by position and writes k, v to their slots (headDim ${headDim}, ${numHeads}q/${numKvHeads}kv)`, () => {
      const shape = { numHeads, numKvHeads, headDim, scale: 1, slidingWindow: null };
      const rope = plainRopeTable(headDim, 10000, 64);
      const half = headDim / 2;
      const numTokens = random.int(1, 6);
      const blockSize = random.pick([1, 4, 16]);
      const numSlots = 8 * blockSize;
      const rowWidth = (numHeads + 2 * numKvHeads) * headDim;
      const kvWidth = numKvHeads * headDim;
      const qkv = random.floats(numTokens * rowWidth);
      const original = qkv.slice();
      const positions = Int32Array.from({ length: numTokens }, () => random.int(0, 63));
      const slotMapping = Int32Array.from(random.shuffled(Array.from({ length: numSlots }, (_, i) => i)).slice(0, numTokens));
      const pools = { keys: new Float32Array(numSlots * kvWidth), values: new Float32Array(numSlots * kvWidth) };
      ropeAndCacheWrite(qkv, positions, slotMapping, rope, floatPools(pools, shape), shape);

      for (let t = 0; t < numTokens; t++) {
        const cos = rope.cos.subarray(positions[t] * half, (positions[t] + 1) * half);
        const sin = rope.sin.subarray(positions[t] * half, (positions[t] + 1) * half);
        for (let h = 0; h < numHeads + 2 * numKvHeads; h++) {
          const at = t * rowWidth + h * headDim;
          const head = qkv.subarray(at, at + headDim);
          const before = original.subarray(at, at + headDim);
          if (h < numHeads + numKvHeads) assertClose(head, naiveRotate(before, cos, sin), `token ${t} head ${h}`);
          else assert.deepEqual(head, before, `value head ${h} of token ${t} must not rotate`);
        }
        const slotAt = slotMapping[t] * kvWidth;
        const keyAt = t * rowWidth + numHeads * headDim;
        assert.deepEqual(pools.keys.subarray(slotAt, slotAt + kvWidth), qkv.subarray(keyAt, keyAt + kvWidth), `keys of token ${t}`);
        assert.deepEqual(pools.values.subarray(slotAt, slotAt + kvWidth), original.subarray(keyAt + kvWidth, keyAt + 2 * kvWidth), `values of token ${t}`);
      }
      const written = new Set(slotMapping);
      for (let slot = 0; slot < numSlots; slot++) {
        if (written.has(slot)) continue;
        assert.ok(pools.keys.subarray(slot * kvWidth, (slot + 1) * kvWidth).every((v) => v === 0), `slot ${slot} must be untouched`);
        assert.ok(pools.values.subarray(slot * kvWidth, (slot + 1) * kvWidth).every((v) => v === 0), `slot ${slot} must be untouched`);
      }
    });
  }
}

test('position 0 leaves heads unrotated', () => {
  const shape = { numHeads: 1, numKvHeads: 1, headDim: 4, scale: 1, slidingWindow: null };
  const qkv = random.floats(12);
  const original = qkv.slice();
  const pools = { keys: new Float32Array(4), values: new Float32Array(4) };
  ropeAndCacheWrite(qkv, Int32Array.of(0), Int32Array.of(0), plainRopeTable(4, 10000, 8), floatPools(pools, shape), shape);
  assert.deepEqual(qkv, original);
});

test('a rotary row beyond the table is a context_overflow error', () => {
  const shape = { numHeads: 1, numKvHeads: 1, headDim: 4, scale: 1, slidingWindow: null };
  const pools = { keys: new Float32Array(4), values: new Float32Array(4) };
  assert.throws(
    () => ropeAndCacheWrite(new Float32Array(12), Int32Array.of(8), Int32Array.of(0), plainRopeTable(4, 10000, 8), floatPools(pools, shape), shape),
    (e: unknown) => e instanceof KeelError && e.kind === 'context_overflow' && /rotary row 8/.test(e.message),
  );
});

test('a partial rotary table rotates each head\'s leading dims by its row and passes the rest through to the cache', () => {
  const [headDim, rotaryDim, numHeads, numKvHeads] = [16, 12, 2, 1];
  const shape = { numHeads, numKvHeads, headDim, scale: 1, slidingWindow: null };
  const rope = plainRopeTable(headDim, 10000, 32, rotaryDim);
  const rowWidth = (numHeads + 2 * numKvHeads) * headDim;
  const qkv = random.floats(2 * rowWidth);
  const original = qkv.slice();
  const pools = { keys: new Float32Array(4 * headDim), values: new Float32Array(4 * headDim) };
  const rows = Int32Array.of(5, 29);
  ropeAndCacheWrite(qkv, rows, Int32Array.of(3, 1), rope, floatPools(pools, shape), shape);
  const half = rotaryDim / 2;
  for (let t = 0; t < 2; t++) {
    const cos = rope.cos.subarray(rows[t] * half, (rows[t] + 1) * half);
    const sin = rope.sin.subarray(rows[t] * half, (rows[t] + 1) * half);
    for (let h = 0; h < numHeads + numKvHeads; h++) {
      const at = t * rowWidth + h * headDim;
      assertClose(qkv.subarray(at, at + rotaryDim), naiveRotate(original.subarray(at, at + rotaryDim), cos, sin), `token ${t} head ${h}`);
      assert.deepEqual(qkv.subarray(at + rotaryDim, at + headDim), original.subarray(at + rotaryDim, at + headDim), `token ${t} head ${h} tail`);
    }
  }
  const keyAt = rowWidth + numHeads * headDim;
  assert.deepEqual(pools.keys.subarray(headDim, 2 * headDim), qkv.subarray(keyAt, keyAt + headDim), 'keys of token 1, tail included');
});

test('a slot outside the pool throws instead of writing out of bounds', () => {
  const shape = { numHeads: 1, numKvHeads: 1, headDim: 4, scale: 1, slidingWindow: null };
  const pools = { keys: new Float32Array(8), values: new Float32Array(8) };
  assert.throws(() => ropeAndCacheWrite(new Float32Array(12), Int32Array.of(0), Int32Array.of(2), plainRopeTable(4, 10000, 8), floatPools(pools, shape), shape), /slot 2/);
});

function floatPools(pools: { keys: Float32Array; values: Float32Array }, shape: { numKvHeads: number; headDim: number }) {
  return { keys: float32Pool(pools.keys, shape.numKvHeads, shape.headDim), values: float32Pool(pools.values, shape.numKvHeads, shape.headDim), kScale: 1, vScale: 1 };
}
