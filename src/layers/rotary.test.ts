import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { forkStream } from '../sampling/rng.ts';
import type { LlamaConfig } from '../models/llama.ts';
import { parseModelArchitecture } from '../models/registry.ts';
import { buildRopeTable, inverseFrequencies, RotaryEmbedding, type RopeScaling, type RotaryConfig } from './rotary.ts';

function config(headDim: number, scaling: RopeScaling, maxPositionEmbeddings = 2048, theta = 10000): RotaryConfig {
  return { rotaryDim: headDim, scaling, maxPositionEmbeddings, theta };
}

function assertClose(actual: ArrayLike<number>, expected: number[], tolerance: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < expected.length; i++) {
    assert.ok(Math.abs(actual[i] - expected[i]) <= tolerance * Math.max(1, Math.abs(expected[i])), `${what}[${i}]: ${actual[i]} vs ${expected[i]}`);
  }
}

function row(values: Float32Array, position: number, half: number): number[] {
  return Array.from(values.subarray(position * half, (position + 1) * half));
}

test('default rope: inv_freq = theta^(-2i/d), cos/sin of position * inv_freq in rotate_half layout', () => {
  const c = config(4, { type: 'default' });
  assertClose(inverseFrequencies(c, 0), [1, 0.01], 1e-15, 'inv_freq');
  const table = buildRopeTable(c, 8);
  assert.equal(table.maxPositions, 8);
  assert.equal(table.rotaryDim, 4);
  assert.equal(table.cos.length, 16);
  assertClose(row(table.cos, 0, 2), [1, 1], 0, 'cos@0');
  assertClose(row(table.sin, 0, 2), [0, 0], 0, 'sin@0');
  assertClose(row(table.cos, 3, 2), [Math.cos(3), Math.cos(0.03)], 1e-7, 'cos@3');
  assertClose(row(table.sin, 3, 2), [Math.sin(3), Math.sin(0.03)], 1e-7, 'sin@3');
});

test('linear scaling divides inv_freq by the factor: position 2p matches default position p', () => {
  const linear = buildRopeTable(config(8, { type: 'linear', factor: 2 }), 64);
  const plain = buildRopeTable(config(8, { type: 'default' }), 64);
  for (let p = 0; p < 32; p++) {
    assert.deepEqual(row(linear.cos, 2 * p, 4), row(plain.cos, p, 4));
    assert.deepEqual(row(linear.sin, 2 * p, 4), row(plain.sin, p, 4));
  }
});

test('llama3 keeps high frequencies, divides low ones by the factor and smooths the middle', () => {
  const c = config(8, { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 1000 });
  // Base inv_freq [1, 0.1, 0.01, 0.001] has wavelengths 2π/f ≈ [6.3, 63, 628, 6283] against bounds 250 and 1000.
  const smooth = (1000 / (2 * Math.PI * 100) - 1) / 3;
  assertClose(inverseFrequencies(c, 0), [1, 0.1, ((1 - smooth) * 0.01) / 8 + smooth * 0.01, 0.001 / 8], 1e-12, 'inv_freq');
  assert.ok(Math.abs(smooth - 0.19718) < 1e-5);
});

test('llama3 with equal low and high factors (Llama 4 Scout) has no band to smooth: short wavelengths kept, long ones divided', () => {
  const c = config(8, { type: 'llama3', factor: 16, lowFreqFactor: 1, highFreqFactor: 1, originalMaxPositionEmbeddings: 100 });
  // Wavelengths ≈ [6.3, 63, 628, 6283] against the one bound 100.
  assertClose(inverseFrequencies(c, 0), [1, 0.1, 0.01 / 16, 0.001 / 16], 1e-12, 'inv_freq');
});

test('no rotation (NoPE layers): every row of the table is the identity', () => {
  const table = buildRopeTable(config(8, { type: 'none' }), 32);
  assert.ok(table.cos.every((v) => v === 1) && table.sin.every((v) => v === 0));
});

test('yarn ramps from extrapolated to interpolated frequencies and scales cos/sin by the attention factor', () => {
  const yarn = (truncate: boolean): RopeScaling => ({
    type: 'yarn',
    factor: 4,
    originalMaxPositionEmbeddings: 2048,
    betaFast: 32,
    betaSlow: 1,
    attentionFactor: 0.1 * Math.log(4) + 1,
    truncate,
  });
  // correction dims: 8·ln(2048 / (2π·32)) / (2·ln 1e4) ≈ 1.008 and 8·ln(2048 / 2π) / (2·ln 1e4) ≈ 2.513.
  const truncated = config(8, yarn(true));
  assertClose(inverseFrequencies(truncated, 0), [1, 0.1, 0.5 * 0.01 + 0.5 * 0.0025, 0.00025], 1e-12, 'truncated inv_freq');
  const low = (8 * Math.log(2048 / (2 * Math.PI * 32))) / (2 * Math.log(10000));
  const high = (8 * Math.log(2048 / (2 * Math.PI))) / (2 * Math.log(10000));
  const w = (2 - low) / (high - low);
  assertClose(inverseFrequencies(config(8, yarn(false)), 0), [1, 0.1, w * 0.0025 + (1 - w) * 0.01, 0.00025], 1e-12, 'exact inv_freq');

  const table = buildRopeTable(truncated, 16);
  const factor = 0.1 * Math.log(4) + 1;
  assertClose(row(table.cos, 0, 4), [factor, factor, factor, factor], 1e-7, 'cos@0');
  assertClose(row(table.cos, 5, 4), [Math.cos(5) * factor, Math.cos(0.5) * factor, Math.cos(5 * 0.00625) * factor, Math.cos(5 * 0.00025) * factor], 1e-6, 'cos@5');
});

test('dynamic NTK keeps original frequencies up to max_position_embeddings and rescales each later position by its own length', () => {
  const dynamic = config(4, { type: 'dynamic', factor: 2 }, 16);
  const table = buildRopeTable(dynamic, 40);
  const plain = buildRopeTable(config(4, { type: 'default' }, 16), 40);
  for (let p = 0; p < 16; p++) assert.deepEqual(row(table.cos, p, 2), row(plain.cos, p, 2), `position ${p}`);
  // Position 31 -> seq_len 32: base' = 1e4 · (2·32/16 − 1)^(4/2) = 9e4, so inv_freq = [1, 1/300].
  assertClose(inverseFrequencies(dynamic, 31), [1, 1 / 300], 1e-12, 'inv_freq@31');
  assertClose(row(table.cos, 31, 2), [Math.cos(31), Math.cos(31 / 300)], 1e-7, 'cos@31');
  assertClose(row(table.sin, 31, 2), [Math.sin(31), Math.sin(31 / 300)], 1e-7, 'sin@31');
  assert.notDeepEqual(row(table.cos, 20, 2), row(plain.cos, 20, 2));
  assert.deepEqual(row(buildRopeTable(dynamic, 24).cos, 20, 2), row(table.cos, 20, 2), 'a row does not depend on the table length');
});

test('every variant gives finite tables with cos² + sin² = attention factor²', () => {
  const seed = Number(process.env.KEEL_TEST_SEED ?? Math.floor(Math.random() * 2 ** 32));
  console.log(`rope property test seed ${seed} (rerun with KEEL_TEST_SEED=${seed})`);
  const rng = forkStream(seed, 0);
  const random = () => rng.nextFloat();
  const variants: RopeScaling[] = [
    { type: 'default' },
    { type: 'linear', factor: 1 + random() * 7 },
    { type: 'dynamic', factor: 1 + random() * 7 },
    { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 64 },
    { type: 'yarn', factor: 1 + random() * 31, originalMaxPositionEmbeddings: 64, betaFast: 32, betaSlow: 1, attentionFactor: 1 + random(), truncate: random() < 0.5 },
  ];
  for (const scaling of variants) {
    const headDim = 2 * (1 + Math.floor(random() * 64));
    const table = buildRopeTable(config(headDim, scaling, 128, 1000 + random() * 1e6), 300);
    const factor = scaling.type === 'yarn' ? scaling.attentionFactor : 1;
    assert.equal(table.cos.length, 300 * (headDim / 2));
    assertUnitCircle(table, factor, `${scaling.type} headDim ${headDim}`);
  }
  const half = 1 + Math.floor(random() * 64);
  const factors = () => Array.from({ length: half }, () => 1 + random() * 10);
  const longrope: RopeScaling = { type: 'longrope', shortFactor: factors(), longFactor: factors(), originalMaxPositionEmbeddings: 64, attentionFactor: 1 + random() };
  assertUnitCircle(buildRopeTable(config(2 * half, longrope, 256), 300), longrope.attentionFactor, `longrope headDim ${2 * half}`);
});

function assertUnitCircle(table: { cos: Float32Array; sin: Float32Array }, factor: number, what: string): void {
  for (let i = 0; i < table.cos.length; i++) {
    const norm = table.cos[i] ** 2 + table.sin[i] ** 2;
    assert.ok(Math.abs(norm - factor ** 2) < 1e-5, `${what} entry ${i}: ${norm}`);
  }
}

test('longrope: short-factor rows before the original context, then a long-factor row per position; rows follow the prompt length', () => {
  const shortFactor = [1, 2];
  const longFactor = [3, 5];
  const scaling: RopeScaling = { type: 'longrope', shortFactor, longFactor, originalMaxPositionEmbeddings: 8, attentionFactor: 1.5 };
  const c = config(4, scaling, 32);
  assertClose(inverseFrequencies(c, 0), [1, 0.01 / 2], 1e-15, 'inv_freq (short)');
  const table = buildRopeTable(c, 20);
  assert.equal(table.maxPositions, 8 + 20);
  assertClose(row(table.cos, 5, 2), [1.5 * Math.cos(5), 1.5 * Math.cos(5 * 0.005)], 1e-6, 'short row 5');
  assertClose(row(table.sin, 8 + 5, 2), [1.5 * Math.sin(5 / 3), 1.5 * Math.sin((5 * 0.01) / 5)], 1e-6, 'long row of position 5');
  assertClose(row(table.cos, 8 + 19, 2), [1.5 * Math.cos(19 / 3), 1.5 * Math.cos((19 * 0.01) / 5)], 1e-6, 'long row of position 19');

  const rotary = new RotaryEmbedding(c, 20);
  // A prompt within the original context: short rows for its positions, long rows from position 8 on.
  assert.deepEqual([0, 7, 8, 12].map((p) => rotary.rotaryRow(p, 8)), [0, 7, 16, 20]);
  assert.equal(rotary.prefixCacheSalt(8), null);
  // A longer prompt: long rows from position 0.
  assert.deepEqual([0, 7, 8].map((p) => rotary.rotaryRow(p, 9)), [8, 15, 16]);
  assert.equal(rotary.prefixCacheSalt(9), 'longrope:long-factors');
  // A table shorter than the original context holds short rows for its positions only.
  assert.equal(buildRopeTable(c, 6).maxPositions, 12);
  assert.equal(new RotaryEmbedding(c, 6).rotaryRow(3, 9), 9);

  const plain = new RotaryEmbedding(config(4, { type: 'linear', factor: 2 }), 20);
  assert.deepEqual([0, 9, 19].map((p) => plain.rotaryRow(p, 30)), [0, 9, 19]);
  assert.equal(plain.prefixCacheSalt(30), null);
  assert.throws(() => new RotaryEmbedding(config(6, scaling, 32), 20), /3 short and long factors/);
});

interface RopeOracleCase {
  config: Record<string, unknown>;
  invFreq: number[];
  attentionScaling: number;
  rows: Record<string, { cos: number[]; sin: number[] }>;
}

test('tables match transformers RotaryEmbedding for every rope type, from config.json through to cos/sin', () => {
  const oracle = JSON.parse(readFileSync(new URL('../../test/helpers/model-rope-oracle.json', import.meta.url), 'utf8')) as {
    cases: Record<string, RopeOracleCase>;
  };
  assert.ok(Object.keys(oracle.cases).length >= 9);
  for (const [name, expected] of Object.entries(oracle.cases)) {
    const llama = parseModelArchitecture(expected.config, name).config as LlamaConfig;
    const c = config(llama.headDim, llama.ropeScaling, llama.maxPositionEmbeddings, llama.ropeTheta);
    // transformers computes inv_freq in float32; Keel in float64.
    const inverse = inverseFrequencies(c, 0);
    assert.equal(inverse.length, expected.invFreq.length);
    expected.invFreq.forEach((f, i) => assert.ok(Math.abs(inverse[i] - f) <= 1e-6 * f, `${name} inv_freq[${i}]: ${inverse[i]} vs ${f}`));
    assert.ok(Math.abs((c.scaling.type === 'yarn' ? c.scaling.attentionFactor : 1) - expected.attentionScaling) < 1e-12, `${name} attention factor`);
    const positions = Object.keys(expected.rows).map(Number);
    const table = buildRopeTable(c, Math.max(...positions) + 1);
    const half = c.rotaryDim / 2;
    for (const p of positions) {
      const width = expected.rows[p].cos.length;
      assertClose(row(table.cos, p, half).slice(0, width), expected.rows[p].cos, 5e-5, `${name} cos@${p}`);
      assertClose(row(table.sin, p, half).slice(0, width), expected.rows[p].sin, 5e-5, `${name} sin@${p}`);
    }
  }
});

test("proportional rope (Gemma 4): the first ⌊partial · d / 2⌋ pairs at the whole head's default frequencies over factor, the rest not rotating", () => {
  const c = config(16, { type: 'proportional', factor: 2, partialRotaryFactor: 0.25 });
  // d = 16: pairs 0 and 1 rotate at 1e4^(-2i/16) / 2; pairs 2..7 have frequency 0.
  assertClose(inverseFrequencies(c, 0), [0.5, 10000 ** (-2 / 16) / 2, 0, 0, 0, 0, 0, 0], 1e-15, 'inv_freq');
  const table = buildRopeTable(c, 4);
  assert.deepEqual(row(table.cos, 3, 8).slice(2), [1, 1, 1, 1, 1, 1], 'unrotated pairs: cos 1');
  assert.deepEqual(row(table.sin, 3, 8).slice(2), [0, 0, 0, 0, 0, 0], 'unrotated pairs: sin 0');
});
