import assert from 'node:assert/strict';
import { test } from 'node:test';
import { gumbelNoise } from './gumbel.ts';

test('Gumbel noise is a pure function of (seed, index) with the Gumbel mean', () => {
  assert.equal(gumbelNoise(7, 3), gumbelNoise(7, 3));
  assert.notEqual(gumbelNoise(7, 3), gumbelNoise(8, 3));
  assert.notEqual(gumbelNoise(7, 3), gumbelNoise(7, 4));
  let sum = 0;
  const n = 200_000;
  for (let i = 0; i < n; i++) sum += gumbelNoise(12345, i);
  // Gumbel(0, 1) has mean γ ≈ 0.5772 and variance π²/6.
  assert.ok(Math.abs(sum / n - 0.5772) < 0.02, `mean ${sum / n}`);
});
