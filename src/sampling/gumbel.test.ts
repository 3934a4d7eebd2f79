import assert from 'node:assert/strict';
import { test } from 'node:test';
import { gumbelNoise, gumbelSample } from './gumbel.ts';

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

test('gumbelSample draws from softmax(logits / T), takes the argmax at T = 0, skips non-finite logits', () => {
  const logits = [1, 0.5, -Infinity, 0, NaN];
  const temperature = 0.7;
  const counts = [0, 0, 0, 0, 0];
  const draws = 20_000;
  for (let seed = 0; seed < draws; seed++) counts[gumbelSample(logits, temperature, seed * 2654435761)]++;
  const weights = [1, 0.5, 0].map((l) => Math.exp(l / temperature));
  const total = weights.reduce((a, b) => a + b, 0);
  [0, 1, 3].forEach((token, i) => {
    const expected = weights[i] / total;
    assert.ok(Math.abs(counts[token] / draws - expected) < 0.015, `token ${token}: ${counts[token] / draws} vs ${expected}`);
  });
  assert.equal(counts[2] + counts[4], 0, 'never -inf or NaN');
  assert.equal(gumbelSample(logits, 0, 99), 0);
  assert.equal(gumbelSample([-Infinity, NaN], 1, 5), -1);
});
