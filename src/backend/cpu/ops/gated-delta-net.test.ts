import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { DeltaRuleParams, KvCache, Tensor } from '../../backend.ts';
import { CpuBackend } from '../cpu-backend.ts';
import { CpuTensor } from '../cpu-tensor.ts';
import { deltaRuleDecays } from '../../shape-checks.ts';
import { describeBatch } from '../../../step/batch.ts';
import type { SequenceStateSpec } from '../../../step/kv-cache-layout.ts';
import { TestRandom, testSeed } from '../../../../test/helpers/cpu-random.ts';
import { assertClose, stateStep } from '../../../../test/helpers/state-steps.ts';

const random = new TestRandom(testSeed('gated delta net ops'));
const backend = new CpuBackend();

/** A cache of one state layer with `slots` slots (and a block pool it never uses). */
function stateCache(spec: SequenceStateSpec, slots: number): KvCache {
  return backend.createKvCache({ numBlocks: 64, blockSize: 16, layers: [spec], stateSlots: slots });
}

const step = (starts: number[], lengths: number[], slots: number[]) => stateStep(backend, starts, lengths, slots);

function rows(data: Float32Array, width: number, first: number, count: number): CpuTensor {
  return new CpuTensor([count, width], data.slice(first * width, (first + count) * width));
}

/** A sequence's tokens split into chunks of random lengths, each a step of its own. */
function randomChunks(length: number): number[] {
  const chunks: number[] = [];
  for (let left = length; left > 0; ) {
    const n = random.int(1, Math.min(left, 5));
    chunks.push(n);
    left -= n;
  }
  return chunks;
}

test('causalConv1d is the zero-padded depthwise convolution plus bias then silu, however the sequence is chunked', () => {
  for (let trial = 0; trial < 10; trial++) {
    const [channels, kernel, length] = [random.int(1, 6), random.int(2, 5), random.int(1, 14)];
    const x = random.floats(length * channels);
    const weight = new CpuTensor([channels, kernel], random.floats(channels * kernel));
    const bias = trial % 2 === 0 ? null : new CpuTensor([channels], random.floats(channels));
    const expected = new Float32Array(length * channels);
    for (let t = 0; t < length; t++) {
      for (let c = 0; c < channels; c++) {
        let sum = bias === null ? 0 : bias.data[c];
        for (let j = 0; j < kernel; j++) {
          const p = t - (kernel - 1) + j;
          if (p >= 0) sum += weight.data[c * kernel + j] * x[p * channels + c];
        }
        expected[t * channels + c] = sum / (1 + Math.exp(-sum));
      }
    }
    const spec: SequenceStateSpec = { kind: 'state', convElements: (kernel - 1) * channels, recurrentElements: 0 };
    const cache = stateCache(spec, 3);
    // A slot left dirty by an earlier sequence: a chunk at position 0 starts from zeros anyway.
    backend.causalConv1d(new CpuTensor([2, channels], random.floats(2 * channels)), weight, bias, cache, 0, step([5], [2], [1]));
    const out: number[] = [];
    let at = 0;
    for (const n of randomChunks(length)) {
      out.push(...(backend.causalConv1d(rows(x, channels, at, n), weight, bias, cache, 0, step([at], [n], [1])) as CpuTensor).data);
      at += n;
    }
    assertClose(out, expected, 1e-5, `trial ${trial}`);
  }
});

interface DeltaInputs {
  qkv: Float32Array;
  ba: Float32Array;
}

function deltaSpec(p: DeltaRuleParams): SequenceStateSpec {
  return { kind: 'state', convElements: 0, recurrentElements: p.numValueHeads * p.keyDim * p.valueDim };
}

/** Columns of ba: each value head's b, then its decays' a. */
const gateWidth = (p: DeltaRuleParams) => p.numValueHeads + deltaRuleDecays(p);

function runDelta(p: DeltaRuleParams, inputs: DeltaInputs, aLog: Tensor, dtBias: Tensor, cache: KvCache, start: number, n: number, slot: number): Float32Array {
  const width = 2 * p.numKeyHeads * p.keyDim + p.numValueHeads * p.valueDim;
  const out = backend.gatedDeltaRule(rows(inputs.qkv, width, start, n), rows(inputs.ba, gateWidth(p), start, n), aLog, dtBias, cache, 0, step([start], [n], [slot]), p);
  return (out as CpuTensor).data;
}

test('gatedDeltaRule carries each sequence\'s state across chunks, in its own slot, with a decay per head or per key channel', () => {
  for (let trial = 0; trial < 10; trial++) {
    const numKeyHeads = random.int(1, 2);
    const decay = trial % 2 === 0 ? 'head' : 'keyChannel';
    const p: DeltaRuleParams = { numKeyHeads, numValueHeads: numKeyHeads * random.int(1, 3), keyDim: random.int(1, 5), valueDim: random.int(1, 5), decay };
    const width = 2 * p.numKeyHeads * p.keyDim + p.numValueHeads * p.valueDim;
    const lengths = [random.int(1, 12), random.int(1, 12)];
    const seqs = lengths.map((n) => ({ qkv: random.floats(n * width), ba: random.floats(n * gateWidth(p), 2) }));
    const aLog = new CpuTensor([p.numValueHeads], random.floats(p.numValueHeads));
    const dtBias = new CpuTensor([deltaRuleDecays(p)], random.floats(deltaRuleDecays(p)));
    // Both sequences whole, in one step.
    const both = stateCache(deltaSpec(p), 2);
    const batched = backend.gatedDeltaRule(
      new CpuTensor([lengths[0] + lengths[1], width], Float32Array.from([...seqs[0].qkv, ...seqs[1].qkv])),
      new CpuTensor([lengths[0] + lengths[1], gateWidth(p)], Float32Array.from([...seqs[0].ba, ...seqs[1].ba])),
      aLog, dtBias, both, 0, step([0, 0], lengths, [0, 1]), p,
    ) as CpuTensor;
    // The second sequence alone, chunk by chunk, in another slot.
    const chunked = stateCache(deltaSpec(p), 3);
    const out: number[] = [];
    let at = 0;
    for (const n of randomChunks(lengths[1])) {
      out.push(...runDelta(p, seqs[1], aLog, dtBias, chunked, at, n, 2));
      at += n;
    }
    assertClose(out, batched.data.subarray(lengths[0] * p.numValueHeads * p.valueDim), 1e-5, `trial ${trial}`);
  }
});

test('gatedDeltaRule without decay and with full writes recalls the value stored under an orthogonal key', () => {
  // One head, keys e0 and e1 (normalized as they are), β = σ(60) ≈ 1 and g = −softplus(−60) ≈ 0:
  // the state becomes v0 e0ᵀ + v1 e1ᵀ, so a query along e0 reads v0 (times keyDim^-0.5).
  const p: DeltaRuleParams = { numKeyHeads: 1, numValueHeads: 1, keyDim: 2, valueDim: 3, decay: 'head' };
  const v0 = [0.5, -1, 2];
  const v1 = [3, 0.25, -0.75];
  const token = (q: number[], k: number[], v: number[]) => [...q, ...k, ...v];
  const inputs = {
    qkv: Float32Array.from([...token([0, 1], [1, 0], v0), ...token([1, 0], [0, 1], v1), ...token([0, 3], [1, 0], [0, 0, 0])]),
    ba: Float32Array.from([60, -60, 60, -60, -60, -60]),
  };
  const cache = stateCache(deltaSpec(p), 1);
  const out = runDelta(p, inputs, new CpuTensor([1], Float32Array.of(0)), new CpuTensor([1], Float32Array.of(0)), cache, 0, 3, 0);
  assertClose(out.subarray(0, 3), [0, 0, 0], 1e-4, 'token 0 finds nothing under e1');
  assertClose(out.subarray(3, 6), v0.map((v) => v / Math.SQRT2), 1e-4, 'token 1 recalls v0 under e0');
  // Token 2 writes nothing (β = σ(−60)) and asks for e1, with a query of norm 3 (normalized away).
  assertClose(out.subarray(6, 9), v1.map((v) => v / Math.SQRT2), 1e-4, 'token 2 recalls v1 under e1');
});

test('a decay per key channel decays each row of the state by its own gate', () => {
  // One head, keys e0 and e1 written in full without decay (β = σ(60), a = −60 on both channels);
  // then a token that writes nothing (β = σ(−60)) and decays channel 0 by exp(−softplus(2)) and
  // channel 1 not at all, so a query along e0 reads v0 decayed, and the next along e1 reads v1 whole.
  const p: DeltaRuleParams = { numKeyHeads: 1, numValueHeads: 1, keyDim: 2, valueDim: 3, decay: 'keyChannel' };
  const v0 = [0.5, -1, 2];
  const v1 = [3, 0.25, -0.75];
  const token = (q: number[], k: number[], v: number[]) => [...q, ...k, ...v];
  const inputs = {
    qkv: Float32Array.from([...token([0, 1], [1, 0], v0), ...token([1, 0], [0, 1], v1), ...token([1, 0], [1, 0], [0, 0, 0]), ...token([0, 1], [0, 1], [0, 0, 0])]),
    ba: Float32Array.from([60, -60, -60, 60, -60, -60, -60, 2, -60, -60, -60, -60]),
  };
  const cache = stateCache(deltaSpec(p), 1);
  const out = runDelta(p, inputs, new CpuTensor([1], Float32Array.of(0)), new CpuTensor([2], Float32Array.of(0, 0)), cache, 0, 4, 0);
  const decay = Math.exp(-Math.log1p(Math.exp(2)));
  assertClose(out.subarray(6, 9), v0.map((v) => (v * decay) / Math.SQRT2), 1e-4, 'channel 0 decayed');
  assertClose(out.subarray(9, 12), v1.map((v) => v / Math.SQRT2), 1e-4, 'channel 1 kept');
});

test('a decay per key channel equals the per-head decay when every channel of a head shares its gate', () => {
  for (let trial = 0; trial < 5; trial++) {
    const head: DeltaRuleParams = { numKeyHeads: 1, numValueHeads: random.int(1, 3), keyDim: random.int(1, 4), valueDim: random.int(1, 4), decay: 'head' };
    const channel: DeltaRuleParams = { ...head, decay: 'keyChannel' };
    const n = random.int(1, 8);
    const width = 2 * head.keyDim + head.numValueHeads * head.valueDim;
    const hv = head.numValueHeads;
    const qkv = random.floats(n * width);
    const ba = random.floats(n * 2 * hv, 2);
    const dt = random.floats(hv);
    // Each head's a and dt_bias repeated over its keyDim channels.
    const spread = (t: number) => [...ba.subarray(t * 2 * hv, t * 2 * hv + hv), ...Array.from({ length: hv * head.keyDim }, (_, i) => ba[t * 2 * hv + hv + Math.floor(i / head.keyDim)])];
    const channelBa = Float32Array.from(Array.from({ length: n }, (_, t) => spread(t)).flat());
    const aLog = new CpuTensor([hv], random.floats(hv));
    const perHead = runDelta(head, { qkv, ba }, aLog, new CpuTensor([hv], dt), stateCache(deltaSpec(head), 1), 0, n, 0);
    const channelDt = new CpuTensor([hv * head.keyDim], Float32Array.from({ length: hv * head.keyDim }, (_, i) => dt[Math.floor(i / head.keyDim)]));
    const perChannel = runDelta(channel, { qkv, ba: channelBa }, aLog, channelDt, stateCache(deltaSpec(channel), 1), 0, n, 0);
    assertClose(perChannel, perHead, 1e-6, `trial ${trial}`);
  }
});

test('gatedRmsNorm normalizes each group, scales by the weight and gates by silu or sigmoid', () => {
  const [rowsCount, groups, width] = [3, 2, 4];
  const x = random.floats(rowsCount * groups * width);
  const z = random.floats(rowsCount * groups * width);
  const w = random.floats(width);
  const eps = 1e-6;
  for (const activation of ['silu', 'sigmoid'] as const) {
    const out = backend.gatedRmsNorm(new CpuTensor([rowsCount, groups * width], x), new CpuTensor([rowsCount, groups * width], z), new CpuTensor([width], w), eps, activation) as CpuTensor;
    const expected = Array.from(x, (v, i) => {
      const at = i - (i % width);
      const rms = Math.sqrt(Array.from(x.subarray(at, at + width)).reduce((s, u) => s + u * u, 0) / width + eps);
      const sigmoid = 1 / (1 + Math.exp(-z[i]));
      return (v / rms) * w[i % width] * (activation === 'silu' ? z[i] * sigmoid : sigmoid);
    });
    assertClose(out.data, expected, 1e-5, `gated norm, ${activation}`);
  }
});

test('a state op refuses a step without state slots', () => {
  const cache = stateCache({ kind: 'state', convElements: 2, recurrentElements: 0 }, 1);
  const batch = describeBatch([{ tokens: [3], startPos: 0, blockTables: [[0]] }], 16);
  assert.throws(() => backend.causalConv1d(new CpuTensor([1, 2], random.floats(2)), new CpuTensor([2, 2], random.floats(4)), null, cache, 0, backend.beginStep(batch)), /no state slots/);
});
