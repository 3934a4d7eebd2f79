import { test } from 'node:test';
import assert from 'node:assert/strict';
import { siluMul } from './activation.ts';
import { TestRandom, testSeed } from '../../../../test/helpers/cpu-random.ts';

const random = new TestRandom(testSeed('activation'));

test('siluMul multiplies silu(gate) by up, row by row', () => {
  const rows = 4, n = 37;
  const gateUp = random.floats(rows * 2 * n, 8);
  const out = new Float32Array(rows * n);
  siluMul(gateUp, rows, n, out);
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < n; i++) {
      const g = gateUp[r * 2 * n + i];
      const u = gateUp[r * 2 * n + n + i];
      const expected = (g * u) / (1 + Math.exp(-g));
      assert.ok(Math.abs(out[r * n + i] - expected) <= 1e-6 * Math.max(1, Math.abs(expected)), `[${r}, ${i}]`);
    }
  }
});

test('siluMul stays finite at extreme gates: silu(-1000) = 0, silu(1000) = 1000', () => {
  const out = new Float32Array(3);
  siluMul(Float32Array.of(-1000, 1000, 0, 2, 3, 5), 1, 3, out);
  assert.deepEqual(Array.from(out), [-0, 3000, 0]);
});
