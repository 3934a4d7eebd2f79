import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { KvCache, SelectiveScanParams } from '../../backend.ts';
import { CpuBackend } from '../cpu-backend.ts';
import { CpuTensor } from '../cpu-tensor.ts';
import type { SequenceStateSpec } from '../../../step/kv-cache-layout.ts';
import { TestRandom, testSeed } from '../../../../test/helpers/cpu-random.ts';
import { assertClose, stateStep } from '../../../../test/helpers/state-steps.ts';

const random = new TestRandom(testSeed('selective scan op'));
const backend = new CpuBackend();

const step = (starts: number[], lengths: number[], slots: number[]) => stateStep(backend, starts, lengths, slots);

function randomParams(): SelectiveScanParams {
  const numGroups = random.int(1, 2);
  return { numHeads: numGroups * random.int(1, 3), headDim: random.int(1, 4), numGroups, stateSize: random.int(1, 5), dtMin: 0, dtMax: Infinity };
}

function scanCache(p: SelectiveScanParams, slots: number, convElements = 0): KvCache {
  const spec: SequenceStateSpec = { kind: 'state', convElements, recurrentElements: p.numHeads * p.headDim * p.stateSize };
  return backend.createKvCache({ numBlocks: 64, blockSize: 16, layers: [spec], stateSlots: slots });
}

/** A sequence's inputs: xbc, dt and z rows of `length` tokens, and the layer's per-head constants. */
interface ScanInputs {
  length: number;
  xbc: Float32Array;
  dt: Float32Array;
  z: Float32Array;
  aLog: Float32Array;
  dtBias: Float32Array;
  d: Float32Array;
}

function randomInputs(p: SelectiveScanParams, length: number): ScanInputs {
  const h = p.numHeads;
  return {
    length,
    xbc: random.floats(length * (h * p.headDim + 2 * p.numGroups * p.stateSize)),
    dt: random.floats(length * h, 2),
    z: random.floats(length * h * p.headDim, 2),
    aLog: random.floats(h),
    dtBias: random.floats(h),
    d: random.floats(h),
  };
}

/** Runs tokens [start, start + n) of `inputs` as one step of one sequence in `slot`. */
function runScan(p: SelectiveScanParams, inputs: ScanInputs, cache: KvCache, start: number, n: number, slot: number): Float32Array {
  const width = p.numHeads * p.headDim + 2 * p.numGroups * p.stateSize;
  const rows = (data: Float32Array, cols: number) => new CpuTensor([n, cols], data.slice(start * cols, (start + n) * cols));
  const heads = (data: Float32Array) => new CpuTensor([p.numHeads], data);
  const out = backend.selectiveScan(
    rows(inputs.xbc, width), rows(inputs.dt, p.numHeads), rows(inputs.z, p.numHeads * p.headDim),
    heads(inputs.aLog), heads(inputs.dtBias), heads(inputs.d), cache, 0, step([start], [n], [slot]), p,
  );
  return (out as CpuTensor).data;
}

/**
 * The scan's quadratic ("attention") form, SSD's dual: y_t = Σ_{s ≤ t} (C_t · B_s) · exp(A Σ_{s < r ≤ t} Δ_r) · Δ_s · x_s
 * + D x_t, per head, then times silu(z_t); computed in float64 from the definitions, without a state.
 */
function quadraticForm(p: SelectiveScanParams, inputs: ScanInputs): Float64Array {
  const { numHeads: h, headDim: hp, numGroups: g, stateSize: n, dtMin, dtMax } = p;
  const width = h * hp + 2 * g * n;
  const out = new Float64Array(inputs.length * h * hp);
  const softplus = (v: number) => (v > 20 ? v : Math.log1p(Math.exp(v)));
  for (let head = 0; head < h; head++) {
    const group = Math.floor(head / (h / g));
    const a = -Math.exp(inputs.aLog[head]);
    const delta = Array.from({ length: inputs.length }, (_, t) => Math.min(dtMax, Math.max(dtMin, softplus(inputs.dt[t * h + head] + inputs.dtBias[head]))));
    const b = (t: number, k: number) => inputs.xbc[t * width + h * hp + group * n + k];
    const c = (t: number, k: number) => inputs.xbc[t * width + h * hp + (g + group) * n + k];
    const x = (t: number, i: number) => inputs.xbc[t * width + head * hp + i];
    for (let t = 0; t < inputs.length; t++) {
      for (let i = 0; i < hp; i++) {
        let y = inputs.d[head] * x(t, i);
        let decaySum = 0;
        for (let s = t; s >= 0; s--) {
          let score = 0;
          for (let k = 0; k < n; k++) score += c(t, k) * b(s, k);
          y += score * Math.exp(a * decaySum) * delta[s] * x(s, i);
          decaySum += delta[s];
        }
        const zi = inputs.z[t * h * hp + head * hp + i];
        out[t * h * hp + head * hp + i] = (y * zi) / (1 + Math.exp(-zi));
      }
    }
  }
  return out;
}

test('selectiveScan equals its quadratic form, with heads sharing groups, however the sequence is chunked', () => {
  for (let trial = 0; trial < 12; trial++) {
    const p = randomParams();
    if (trial % 3 === 2) Object.assign(p, { dtMin: 0.2, dtMax: 0.9 });
    const inputs = randomInputs(p, random.int(1, 14));
    const cache = scanCache(p, 3, random.int(0, 6));
    // A slot left dirty by an earlier sequence: a chunk at position 0 starts from zeros anyway.
    runScan(p, randomInputs(p, 2), cache, 0, 2, 1);
    const out: number[] = [];
    for (let at = 0; at < inputs.length; ) {
      const n = random.int(1, Math.min(inputs.length - at, 5));
      out.push(...runScan(p, inputs, cache, at, n, 1));
      at += n;
    }
    assertClose(out, quadraticForm(p, inputs), 1e-4, `trial ${trial} (${JSON.stringify(p)})`);
  }
});

test('selectiveScan runs several sequences of one step in their own slots', () => {
  const p = randomParams();
  const seqs = [randomInputs(p, 5), randomInputs(p, 3)];
  const cache = scanCache(p, 4);
  const width = p.numHeads * p.headDim + 2 * p.numGroups * p.stateSize;
  const joined = (pick: (s: ScanInputs) => Float32Array, cols: number) => new CpuTensor([8, cols], Float32Array.from([...pick(seqs[0]), ...pick(seqs[1])]));
  // Every sequence shares the layer's constants: the first's.
  const shared = seqs.map((s) => ({ ...s, aLog: seqs[0].aLog, dtBias: seqs[0].dtBias, d: seqs[0].d }));
  const heads = (data: Float32Array) => new CpuTensor([p.numHeads], data);
  const out = backend.selectiveScan(
    joined((s) => s.xbc, width), joined((s) => s.dt, p.numHeads), joined((s) => s.z, p.numHeads * p.headDim),
    heads(seqs[0].aLog), heads(seqs[0].dtBias), heads(seqs[0].d), cache, 0, step([0, 0], [5, 3], [3, 0]), p,
  ) as CpuTensor;
  assertClose(out.data, [...quadraticForm(p, shared[0]), ...quadraticForm(p, shared[1])], 1e-4, 'two sequences');
});

test('selectiveScan refuses operands that do not fit its geometry', () => {
  const p: SelectiveScanParams = { numHeads: 2, headDim: 2, numGroups: 1, stateSize: 3, dtMin: 0, dtMax: Infinity };
  const cache = scanCache(p, 1);
  const heads = new CpuTensor([2], random.floats(2));
  const run = (xbcCols: number, params: SelectiveScanParams) =>
    backend.selectiveScan(new CpuTensor([1, xbcCols], random.floats(xbcCols)), new CpuTensor([1, 2], random.floats(2)), new CpuTensor([1, 4], random.floats(4)), heads, heads, heads, cache, 0, step([0], [1], [0]), params);
  assert.throws(() => run(9, p), /selectiveScan: xbc \[1, 9\] is not \[1, 10\]/);
  assert.throws(() => run(10, { ...p, numGroups: 3 }), /2 heads do not split evenly over 3 groups/);
  assert.throws(() => run(10, { ...p, stateSize: 2, headDim: 3 }), /selectiveScan: z \[1, 4\] is not \[1, 6\]/);
});
