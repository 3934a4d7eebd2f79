import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { DeltaRuleParams, KvCache, Tensor } from '../../backend.ts';
import { CpuBackend } from '../cpu-backend.ts';
import { CpuTensor } from '../cpu-tensor.ts';
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

function runDelta(p: DeltaRuleParams, inputs: DeltaInputs, aLog: Tensor, dtBias: Tensor, cache: KvCache, start: number, n: number, slot: number): Float32Array {
  const width = 2 * p.numKeyHeads * p.keyDim + p.numValueHeads * p.valueDim;
  const out = backend.gatedDeltaRule(rows(inputs.qkv, width, start, n), rows(inputs.ba, 2 * p.numValueHeads, start, n), aLog, dtBias, cache, 0, step([start], [n], [slot]), p);
  return (out as CpuTensor).data;
}

test('gatedDeltaRule carries each sequence\'s state across chunks, in its own slot', () => {
  for (let trial = 0; trial < 10; trial++) {
    const numKeyHeads = random.int(1, 2);
    const p: DeltaRuleParams = { numKeyHeads, numValueHeads: numKeyHeads * random.int(1, 3), keyDim: random.int(1, 5), valueDim: random.int(1, 5) };
    const width = 2 * p.numKeyHeads * p.keyDim + p.numValueHeads * p.valueDim;
    const lengths = [random.int(1, 12), random.int(1, 12)];
    const seqs = lengths.map((n) => ({ qkv: random.floats(n * width), ba: random.floats(n * 2 * p.numValueHeads, 2) }));
    const aLog = new CpuTensor([p.numValueHeads], random.floats(p.numValueHeads));
    const dtBias = new CpuTensor([p.numValueHeads], random.floats(p.numValueHeads));
    // Both sequences whole, in one step.
    const both = stateCache(deltaSpec(p), 2);
    const batched = backend.gatedDeltaRule(
      new CpuTensor([lengths[0] + lengths[1], width], Float32Array.from([...seqs[0].qkv, ...seqs[1].qkv])),
      new CpuTensor([lengths[0] + lengths[1], 2 * p.numValueHeads], Float32Array.from([...seqs[0].ba, ...seqs[1].ba])),
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
  const p: DeltaRuleParams = { numKeyHeads: 1, numValueHeads: 1, keyDim: 2, valueDim: 3 };
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

test('gatedRmsNorm normalizes each group, scales by the weight and gates by silu', () => {
  const [rowsCount, groups, width] = [3, 2, 4];
  const x = random.floats(rowsCount * groups * width);
  const z = random.floats(rowsCount * groups * width);
  const w = random.floats(width);
  const eps = 1e-6;
  const out = backend.gatedRmsNorm(new CpuTensor([rowsCount, groups * width], x), new CpuTensor([rowsCount, groups * width], z), new CpuTensor([width], w), eps) as CpuTensor;
  const expected = Array.from(x, (v, i) => {
    const at = i - (i % width);
    const rms = Math.sqrt(Array.from(x.subarray(at, at + width)).reduce((s, u) => s + u * u, 0) / width + eps);
    return (v / rms) * w[i % width] * (z[i] / (1 + Math.exp(-z[i])));
  });
  assertClose(out.data, expected, 1e-5, 'gated norm');
});

test('a state op refuses a step without state slots', () => {
  const cache = stateCache({ kind: 'state', convElements: 2, recurrentElements: 0 }, 1);
  const batch = describeBatch([{ tokens: [3], startPos: 0, blockTables: [[0]] }], 16);
  assert.throws(() => backend.causalConv1d(new CpuTensor([1, 2], random.floats(2)), new CpuTensor([2, 2], random.floats(4)), null, cache, 0, backend.beginStep(batch)), /no state slots/);
});
