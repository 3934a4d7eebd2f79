import { test } from 'node:test';
import assert from 'node:assert/strict';
import { gatedActivation, xieluValue } from './activation.ts';
import { TestRandom, testSeed } from '../../../../test/helpers/cpu-random.ts';

const random = new TestRandom(testSeed('activation'));

function checkRows(activation: Parameters<typeof gatedActivation>[0], expected: (g: number, u: number) => number): void {
  const rows = 4, n = 37;
  const gateUp = random.floats(rows * 2 * n, 8);
  const out = new Float32Array(rows * n);
  gatedActivation(activation, gateUp, rows, n, out);
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < n; i++) {
      const want = expected(gateUp[r * 2 * n + i], gateUp[r * 2 * n + n + i]);
      assert.ok(Math.abs(out[r * n + i] - want) <= 1e-6 * Math.max(1, Math.abs(want)), `[${r}, ${i}]: ${out[r * n + i]} vs ${want}`);
    }
  }
}

test('silu multiplies silu(gate) by up, row by row', () => {
  checkRows({ kind: 'silu' }, (g, u) => (g * u) / (1 + Math.exp(-g)));
});

test('gelu-tanh is PyTorch\'s tanh approximation of gelu(gate), times up', () => {
  const c = Math.sqrt(2 / Math.PI);
  checkRows({ kind: 'gelu-tanh' }, (g, u) => 0.5 * g * (1 + Math.tanh(c * (g + 0.044715 * g ** 3))) * u);
});

test('gelu is the exact (erf) GELU: odd part gelu(g) - gelu(-g) = g, 0 at 0, within 1e-3 of the tanh approximation, times up', () => {
  const c = Math.sqrt(2 / Math.PI);
  const gates = Float32Array.from({ length: 200 }, (_, i) => (i - 100) / 12.5);
  const gateUp = new Float32Array(2 * gates.length * 2);
  gateUp.set(gates, 0);
  gateUp.fill(1, gates.length, 2 * gates.length);
  gateUp.set(gates.map((g) => -g), 2 * gates.length);
  gateUp.fill(1, 3 * gates.length);
  const out = new Float32Array(2 * gates.length);
  gatedActivation({ kind: 'gelu' }, gateUp, 2, gates.length, out);
  gates.forEach((g, i) => {
    assert.ok(Math.abs(out[i] - out[gates.length + i] - g) <= 1e-6 * Math.max(1, Math.abs(g)), `gelu(${g}) - gelu(${-g}) = ${out[i] - out[gates.length + i]}`);
    assert.ok(Math.abs(out[i] - 0.5 * g * (1 + Math.tanh(c * (g + 0.044715 * g ** 3)))) < 1e-3, `gelu(${g}) = ${out[i]}`);
  });
  assert.equal(out[100], 0);
  checkRows({ kind: 'gelu' }, (g, u) => {
    const out1 = new Float32Array(1);
    gatedActivation({ kind: 'gelu' }, Float32Array.of(g, 1), 1, 1, out1);
    return out1[0] * u;
  });
});

test('relu multiplies max(gate, 0) by up', () => {
  checkRows({ kind: 'relu' }, (g, u) => Math.max(g, 0) * u);
});

test('clamped swiglu clamps gate above and up on both sides, then (up + 1) · gate · σ(alpha · gate)', () => {
  const limit = 3, alpha = 1.702;
  checkRows({ kind: 'clamped-swiglu', alpha, limit }, (g, u) => {
    const gc = Math.min(g, limit);
    const uc = Math.max(-limit, Math.min(limit, u));
    return (uc + 1) * (gc / (1 + Math.exp(-alpha * gc)));
  });
});

test('silu stays finite at extreme gates: silu(-1000) = 0, silu(1000) = 1000', () => {
  const out = new Float32Array(3);
  gatedActivation({ kind: 'silu' }, Float32Array.of(-1000, 1000, 0, 2, 3, 5), 1, 3, out);
  assert.deepEqual(Array.from(out), [-0, 3000, 0]);
});

test('xIELU: alphaP · x² + beta · x above zero; below, expm1 of x clamped to eps, less x, times alphaN, plus beta · x', () => {
  const p = { alphaP: 2, alphaN: 1.5, beta: 0.5, eps: -1e-6 };
  assert.equal(xieluValue(3, p), 2 * 9 + 1.5);
  // At and just below zero the exponential reads eps: (e^eps - 1 - x) · alphaN + beta · x.
  assert.equal(xieluValue(0, p), Math.expm1(-1e-6) * 1.5);
  assert.equal(xieluValue(-1e-7, p), (Math.expm1(-1e-6) + 1e-7) * 1.5 - 0.5e-7);
  // Far below, e^x vanishes: (-1 - x) · alphaN + beta · x.
  assert.ok(Math.abs(xieluValue(-40, p) - (39 * 1.5 - 20)) < 1e-12);
  assert.equal(xieluValue(-2, p), (Math.expm1(-2) + 2) * 1.5 - 1);
});
