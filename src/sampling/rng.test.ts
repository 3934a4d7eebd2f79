import assert from 'node:assert/strict';
import { test } from 'node:test';
import { forkStream, Xoshiro128StarStar } from './rng.ts';

/** xoshiro128** written from the paper in BigInt arithmetic: the plain reference for the fast one. */
function referenceXoshiro(state: [number, number, number, number], count: number): number[] {
  const mask = 0xffffffffn;
  let [a, b, c, d] = state.map(BigInt);
  const rotl = (x: bigint, k: bigint) => ((x << k) | (x >> (32n - k))) & mask;
  const out: number[] = [];
  for (let i = 0; i < count; i++) {
    out.push(Number((rotl((b * 5n) & mask, 7n) * 9n) & mask));
    const t = (b << 9n) & mask;
    c ^= a;
    d ^= b;
    b ^= c;
    a ^= d;
    c ^= t;
    d = rotl(d, 11n);
  }
  return out;
}

function draws(rng: { nextUint32(): number }, count: number): number[] {
  return Array.from({ length: count }, () => rng.nextUint32());
}

test('xoshiro128** matches the BigInt reference and its published first outputs', () => {
  const state: [number, number, number, number] = [1, 2, 3, 4];
  const fast = draws(new Xoshiro128StarStar(state), 1000);
  assert.deepEqual(fast.slice(0, 3), [11520, 0, 5927040]);
  assert.deepEqual(fast, referenceXoshiro(state, 1000));
  const wide: [number, number, number, number] = [0xdeadbeef, 0x80000000, 0xffffffff, 0x12345678];
  assert.deepEqual(draws(new Xoshiro128StarStar(wide), 1000), referenceXoshiro(wide, 1000));
});

test('xoshiro128** refuses the all-zero state', () => {
  assert.throws(() => new Xoshiro128StarStar([0, 0, 0, 0]), RangeError);
});

test('forkStream: same seed and stream give the same sequence; other seeds or streams differ', () => {
  const floats = (seed: number, stream: number) => {
    const rng = forkStream(seed, stream);
    return Array.from({ length: 64 }, () => rng.nextFloat());
  };
  assert.deepEqual(floats(42, 0), floats(42, 0));
  assert.deepEqual(floats(-7, 3), floats(-7, 3));
  const variants = [floats(42, 0), floats(42, 1), floats(43, 0), floats(42 + 2 ** 32, 0), floats(-42, 0), floats(0, 0)];
  for (let i = 0; i < variants.length; i++) {
    for (let j = i + 1; j < variants.length; j++) {
      assert.notEqual(variants[i][0], variants[j][0], `variants ${i} and ${j} start alike`);
    }
  }
});

test('forkStream rejects seeds and stream indices it cannot represent', () => {
  assert.throws(() => forkStream(1.5, 0), RangeError);
  assert.throws(() => forkStream(2 ** 60, 0), RangeError);
  assert.throws(() => forkStream(1, -1), RangeError);
});

test('nextFloat is in [0, 1) and uniform (mean, variance and deciles over 100k draws)', (t) => {
  const seed = Number(process.env.KEEL_TEST_SEED ?? Math.floor(Math.random() * 2 ** 32));
  t.diagnostic(`seed ${seed}`);
  const rng = forkStream(seed, 0);
  const count = 100_000;
  const deciles = new Array<number>(10).fill(0);
  let sum = 0;
  let sumSquares = 0;
  for (let i = 0; i < count; i++) {
    const x = rng.nextFloat();
    assert.ok(x >= 0 && x < 1, `draw ${x} outside [0, 1)`);
    sum += x;
    sumSquares += x * x;
    deciles[Math.floor(x * 10)]++;
  }
  const mean = sum / count;
  // Standard error of the mean is sqrt(1/12/count) ~ 0.0009; 5 sigma keeps false alarms negligible.
  assert.ok(Math.abs(mean - 0.5) < 0.0046, `mean ${mean}`);
  assert.ok(Math.abs(sumSquares / count - mean * mean - 1 / 12) < 0.003, 'variance far from 1/12');
  for (const hits of deciles) assert.ok(Math.abs(hits / count - 0.1) < 0.005, `decile frequencies ${deciles}`);
});
