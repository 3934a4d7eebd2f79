import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CpuBackend } from '../backend/cpu/cpu-backend.ts';
import { describeBatch, type SequenceChunk } from '../step/batch.ts';
import { float32Tensor } from '../tensor/host-ops.ts';
import type { HostTensor } from '../tensor/host-tensor.ts';
import { MlaAttention, type MlaAttentionOptions } from './mla-attention.ts';
import { buildRopeTable, RotaryEmbedding, type RotaryConfig } from './rotary.ts';
import { TestRandom, testSeed } from '../../test/helpers/cpu-random.ts';

const random = new TestRandom(testSeed('mla attention layer'));

const PREFIX = 'model.layers.0.self_attn';
const MAX_POSITIONS = 64;

interface Shape {
  hidden: number;
  heads: number;
  queryRank: number | null;
  latent: number;
  nope: number;
  rope: number;
  value: number;
  interleaved: boolean;
  bias: boolean;
  /** Mistral 4's query temperature: 1 + beta · ln(1 + ⌊p / floor⌋) at position p; absent: none. */
  temperature?: { floor: number; beta: number };
}

const ROTARY: Omit<RotaryConfig, 'rotaryDim'> = {
  theta: 10000,
  // YaRN with an attention factor != 1, so the factor folded into cos/sin is exercised too.
  scaling: { type: 'yarn', factor: 4, originalMaxPositionEmbeddings: 16, betaFast: 32, betaSlow: 1, attentionFactor: 1.05, truncate: true },
  maxPositionEmbeddings: MAX_POSITIONS,
};

function randomWeights(s: Shape): Map<string, Float32Array> {
  const w = new Map<string, Float32Array>();
  const matrix = (name: string, rows: number, cols: number) => w.set(`${PREFIX}.${name}`, random.floats(rows * cols, 1 / Math.sqrt(cols)));
  const queryRows = s.heads * (s.nope + s.rope);
  if (s.queryRank === null) {
    matrix('q_proj.weight', queryRows, s.hidden);
  } else {
    matrix('q_a_proj.weight', s.queryRank, s.hidden);
    w.set(`${PREFIX}.q_a_layernorm.weight`, Float32Array.from(random.floats(s.queryRank, 0.2), (v) => 1 + v));
    matrix('q_b_proj.weight', queryRows, s.queryRank);
    if (s.bias) w.set(`${PREFIX}.q_a_proj.bias`, random.floats(s.queryRank, 0.2));
  }
  matrix('kv_a_proj_with_mqa.weight', s.latent + s.rope, s.hidden);
  w.set(`${PREFIX}.kv_a_layernorm.weight`, Float32Array.from(random.floats(s.latent, 0.2), (v) => 1 + v));
  matrix('kv_b_proj.weight', s.heads * (s.nope + s.value), s.latent);
  matrix('o_proj.weight', s.hidden, s.heads * s.value);
  if (s.bias) {
    w.set(`${PREFIX}.kv_a_proj_with_mqa.bias`, random.floats(s.latent + s.rope, 0.2));
    w.set(`${PREFIX}.o_proj.bias`, random.floats(s.hidden, 0.2));
  }
  return w;
}

// y = W x (+ b) for W [rows, x.length].
function project(w: Float32Array, x: ArrayLike<number>, bias?: Float32Array): number[] {
  const rows = w.length / x.length;
  return Array.from({ length: rows }, (_, r) => {
    let sum = bias ? bias[r] : 0;
    for (let i = 0; i < x.length; i++) sum += w[r * x.length + i] * x[i];
    return sum;
  });
}

function rmsNorm(x: number[], weight: Float32Array, eps: number): number[] {
  const rms = Math.sqrt(x.reduce((a, v) => a + v * v, 0) / x.length + eps);
  return x.map((v, i) => (v / rms) * weight[i]);
}

/**
 * The layer as transformers' DeepseekV2Attention computes it, from the checkpoint tensors as they
 * are: keys and values expanded per head by kv_b_proj, the rotary part rotated in the checkpoint's
 * own pairing (interleaved pairs as complex numbers, or rotate_half), softmax over positions 0..i.
 * Returns each position's output [hidden].
 */
function referenceOutputs(s: Shape, w: Map<string, Float32Array>, xs: Float32Array[], scale: number): number[][] {
  const get = (name: string) => w.get(`${PREFIX}.${name}`);
  const table = buildRopeTable({ ...ROTARY, rotaryDim: s.rope }, MAX_POSITIONS);
  const half = s.rope / 2;
  const rotate = (v: number[], position: number): number[] => {
    const out = v.slice();
    for (let i = 0; i < half; i++) {
      const [c, sn] = [table.cos[position * half + i], table.sin[position * half + i]];
      const [a, b] = s.interleaved ? [2 * i, 2 * i + 1] : [i, i + half];
      out[a] = v[a] * c - v[b] * sn;
      out[b] = v[b] * c + v[a] * sn;
    }
    return out;
  };
  const headWidth = s.nope + s.rope;
  const kvUp = get('kv_b_proj.weight')!;
  const perHead = (h: number, offset: number, rows: number) => kvUp.subarray((h * (s.nope + s.value) + offset) * s.latent, (h * (s.nope + s.value) + offset + rows) * s.latent);
  const queries = xs.map((x, position) => {
    const q = s.queryRank === null ? project(get('q_proj.weight')!, x) : project(get('q_b_proj.weight')!, rmsNorm(project(get('q_a_proj.weight')!, x, get('q_a_proj.bias')), get('q_a_layernorm.weight')!, 1e-6));
    return Array.from({ length: s.heads }, (_, h) => {
      const head = q.slice(h * headWidth, (h + 1) * headWidth);
      const factor = s.temperature === undefined ? 1 : 1 + s.temperature.beta * Math.log(1 + Math.floor(position / s.temperature.floor));
      return [...head.slice(0, s.nope), ...rotate(head.slice(s.nope), position)].map((v) => v * factor);
    });
  });
  const keysAndValues = xs.map((x, position) => {
    const ckv = project(get('kv_a_proj_with_mqa.weight')!, x, get('kv_a_proj_with_mqa.bias'));
    const latent = rmsNorm(ckv.slice(0, s.latent), get('kv_a_layernorm.weight')!, 1e-6);
    const kRope = rotate(ckv.slice(s.latent), position);
    return Array.from({ length: s.heads }, (_, h) => ({ key: [...project(perHead(h, 0, s.nope), latent), ...kRope], value: project(perHead(h, s.nope, s.value), latent) }));
  });
  return xs.map((_, i) => {
    const attended: number[] = [];
    for (let h = 0; h < s.heads; h++) {
      const scores = keysAndValues.slice(0, i + 1).map((kv) => kv[h].key.reduce((a, k, d) => a + k * queries[i][h][d], 0) * scale);
      const max = Math.max(...scores);
      const exps = scores.map((v) => Math.exp(v - max));
      const sum = exps.reduce((a, b) => a + b, 0);
      for (let d = 0; d < s.value; d++) attended.push(exps.reduce((a, e, j) => a + (e / sum) * keysAndValues[j][h].value[d], 0));
    }
    return project(get('o_proj.weight')!, attended, get('o_proj.bias'));
  });
}

function checkLayer(s: Shape): void {
  const cpu = new CpuBackend();
  const weights = randomWeights(s);
  const scale = random.uniform(0.1, 0.5);
  const options: MlaAttentionOptions = {
    layer: 1,
    hiddenSize: s.hidden,
    numHeads: s.heads,
    queryRank: s.queryRank,
    latentDim: s.latent,
    nopeDim: s.nope,
    ropeDim: s.rope,
    valueDim: s.value,
    scale,
    queryTemperature: s.temperature === undefined ? null : { floorScale: s.temperature.floor, attnScale: s.temperature.beta, positionOffset: 0 },
    normEps: 1e-6,
    rotary: new RotaryEmbedding({ ...ROTARY, rotaryDim: s.rope }, MAX_POSITIONS),
    interleavedRope: s.interleaved,
    bias: s.bias,
    prefix: PREFIX,
    indexer: null,
    sharedSelection: null,
  };
  const layer = new MlaAttention(options);
  const names = layer.parameters().map((p) => p.name);
  assert.deepEqual(new Set(names), new Set(weights.keys()), 'the layer reads exactly the checkpoint tensors of its configuration');
  const read = (name: string): HostTensor => {
    const spec = layer.parameters().find((p) => p.name === name)!;
    return float32Tensor(weights.get(name)!.slice(), spec.shape);
  };
  options.rotary.load({ read }, cpu);
  layer.load({ read }, cpu);

  // Two sequences through three steps: prefill chunks, a decode beside a chunk, then two decodes.
  const blockSize = 4;
  const lengths = [[5, 1, 1], [3, 4, 1]];
  const xs = lengths.map((steps) => Array.from({ length: steps.reduce((a, b) => a + b, 0) }, () => random.floats(s.hidden)));
  const expected = xs.map((x) => referenceOutputs(s, weights, x, scale));
  const blockTables = [[3, 0, 5], [1, 4, 2]];
  const cache = cpu.createKvCache({ numBlocks: 6, blockSize, layers: [{ kind: 'attention', numKvHeads: 1, headDim: 2, slidingWindow: null }, layer.kvSpec] });
  const done = [0, 0];
  for (let step = 0; step < 3; step++) {
    const chunks: SequenceChunk[] = lengths.map((steps, q) => ({ tokens: new Array<number>(steps[step]).fill(0), startPos: done[q], blockTables: [blockTables[q]] }));
    const rows = lengths.flatMap((steps, q) => xs[q].slice(done[q], done[q] + steps[step]));
    const x = cpu.loadWeight(float32Tensor(Float32Array.from(rows.flatMap((r) => Array.from(r))), [rows.length, s.hidden]));
    const out = cpu.toHost(layer.forward(cpu, x, cpu.beginStep(describeBatch(chunks, blockSize)), cache));
    let row = 0;
    lengths.forEach((steps, q) => {
      for (let i = 0; i < steps[step]; i++, row++) {
        const want = expected[q][done[q] + i];
        const got = out.subarray(row * s.hidden, (row + 1) * s.hidden);
        want.forEach((v, d) => assert.ok(Math.abs(got[d] - v) <= 1e-5 * Math.max(1, Math.abs(v)), `${JSON.stringify(s)} step ${step} seq ${q} position ${done[q] + i} [${d}]: ${got[d]} vs ${v}`));
      }
      done[q] += steps[step];
    });
  }
}

test('absorbed MLA equals attention with keys and values expanded by kv_b_proj, as transformers computes it', () => {
  for (const queryRank of [null, 12]) {
    for (const interleaved of [true, false]) {
      for (const bias of [false, true]) {
        checkLayer({ hidden: 24, heads: 3, queryRank, latent: 10, nope: 6, rope: 8, value: 5, interleaved, bias });
      }
    }
  }
});

test('Mistral 4\'s query temperature scales every query after RoPE by its position\'s factor', () => {
  // Positions run to 7: floors of 2 and 3 give factors of 1 up to 1 + beta · ln 4.
  for (const floor of [2, 3]) {
    checkLayer({ hidden: 24, heads: 3, queryRank: 12, latent: 10, nope: 6, rope: 8, value: 5, interleaved: true, bias: false, temperature: { floor, beta: 0.7 } });
  }
});

test('absorbed MLA on random shapes', () => {
  for (let trial = 0; trial < 6; trial++) {
    checkLayer({
      hidden: random.int(4, 32),
      heads: random.int(1, 5),
      queryRank: random.pick([null, random.int(2, 16)]),
      latent: random.int(1, 16),
      nope: random.int(1, 8),
      rope: 2 * random.int(1, 4),
      value: random.int(1, 8),
      interleaved: random.pick([true, false]),
      bias: random.pick([true, false]),
    });
  }
});

test('the layer declares one cached row of latent + rope per token', () => {
  const rotary = new RotaryEmbedding({ ...ROTARY, rotaryDim: 64 }, MAX_POSITIONS);
  const layer = new MlaAttention({
    layer: 0, hiddenSize: 2048, numHeads: 16, queryRank: null, latentDim: 512, nopeDim: 128, ropeDim: 64, valueDim: 128,
    scale: 1, queryTemperature: null, normEps: 1e-6, rotary, interleavedRope: true, bias: false, prefix: PREFIX, indexer: null, sharedSelection: null,
  });
  assert.deepEqual(layer.kvSpec, { kind: 'mla', latentDim: 512, ropeDim: 64 });
  assert.equal(layer.macsPerKey, 16 * (512 + 512 + 64));
});
