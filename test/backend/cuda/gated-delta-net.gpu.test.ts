import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import type { Backend, DeltaRuleParams, KvCache, SelectiveScanParams, StepInputs, Tensor } from '../../../src/backend/backend.ts';
import { CpuBackend } from '../../../src/backend/cpu/cpu-backend.ts';
import { CudaBackend } from '../../../src/backend/cuda/cuda-backend.ts';
import { deltaRuleDecays } from '../../../src/backend/shape-checks.ts';
import { bf16Tensor, randomBf16Values, seededRng } from '../../../src/bench/synthetic-batch.ts';
import { describeBatch, type BatchDescription } from '../../../src/step/batch.ts';
import type { SequenceStateSpec } from '../../../src/step/kv-cache-layout.ts';
import type { HostTensor } from '../../../src/tensor/host-tensor.ts';
import { float32Tensor } from '../../../src/tensor/host-ops.ts';
import { randInt, relativeError, testSeed } from '../../helpers/gpu-test-support.ts';

// The state layers' ops (gated-delta-net.cu: Gated DeltaNet's and Kimi Delta Attention's, and the conv Mamba-2 shares;
// selective-scan.cu: Mamba-2's scan) against their CPU twins, on random shapes, with several
// sequences in their own state slots carried over chunks of several steps. Inputs are
// bf16-representable; the GPU rounds its bf16 outputs (and the conv output before silu, as
// transformers' bf16 modules do), the states stay float32 on both.

const rng = seededRng(testSeed('cuda gated delta net'));
const gpu = new CudaBackend({ arenaBytes: 64 * 1024 * 1024 });
const cpu = new CpuBackend();
after(() => gpu.dispose());

const TOLERANCE = 2e-2;
const BLOCK = 16;

interface Pair {
  cpu: Tensor;
  gpu: Tensor;
}

function bf16Pair(shape: number[], scale = 1): Pair {
  const t = bf16Tensor(shape, randomBf16Values(rng, shape.reduce((a, b) => a * b, 1), scale));
  return { cpu: cpu.loadWeight(t), gpu: gpu.loadWeight(t) };
}

function float32Pair(values: Float32Array): Pair {
  const t: HostTensor = float32Tensor(values, [values.length]);
  return { cpu: cpu.loadWeight(t, { float32: true }), gpu: gpu.loadWeight(t, { float32: true }) };
}

function assertClose(what: string, pair: Pair): void {
  const err = relativeError(gpu.toHost(pair.gpu), cpu.toHost(pair.cpu));
  assert.ok(err < TOLERANCE, `${what}: relative error ${err}`);
}

/** Steps of `numSeqs` sequences in slots 2, 3, ...: each step runs a random chunk of every sequence not yet done. */
function chunkedSteps(lengths: number[]): BatchDescription[] {
  const done = lengths.map(() => 0);
  const steps: BatchDescription[] = [];
  while (done.some((d, s) => d < lengths[s])) {
    const chunks = lengths.flatMap((length, s) => {
      if (done[s] === length) return [];
      const n = randInt(rng, 1, Math.min(length - done[s], 6));
      const chunk = { tokens: new Array<number>(n).fill(3), startPos: done[s], blockTables: [Array.from({ length: Math.ceil((done[s] + n) / BLOCK) }, (_, b) => s * 8 + b)], stateSlot: s + 2 };
      done[s] += n;
      return [chunk];
    });
    steps.push(describeBatch(chunks, BLOCK));
  }
  return steps;
}

function stateCaches(spec: SequenceStateSpec, slots: number): { cpu: KvCache; gpu: KvCache } {
  const layout = { numBlocks: 64, blockSize: BLOCK, layers: [spec], stateSlots: slots };
  return { cpu: cpu.createKvCache(layout), gpu: gpu.createKvCache(layout) };
}

/** Runs `op` on both backends for every step, on the same inputs (`inputsFor` the step), comparing each step's output. */
function compareSteps<I>(what: string, steps: BatchDescription[], inputsFor: (batch: BatchDescription) => I, op: (b: Backend, step: StepInputs, which: 'cpu' | 'gpu', inputs: I) => Tensor): void {
  steps.forEach((batch, i) => {
    const inputs = inputsFor(batch);
    const out = { cpu: op(cpu, cpu.beginStep(batch), 'cpu', inputs), gpu: op(gpu, gpu.beginStep(batch), 'gpu', inputs) };
    assertClose(`${what}, step ${i}`, out);
  });
}

test('causalConv1d matches the CPU over chunks carried in state slots, with a bias or without', () => {
  for (let trial = 0; trial < 8; trial++) {
    const channels = randInt(rng, 1, 300);
    const kernel = randInt(rng, 2, 5);
    const steps = chunkedSteps(Array.from({ length: randInt(rng, 1, 4) }, () => randInt(rng, 1, 20)));
    const weight = bf16Pair([channels, kernel], 0.5);
    const bias = trial % 2 === 0 ? null : bf16Pair([channels], 0.5);
    const caches = stateCaches({ kind: 'state', convElements: (kernel - 1) * channels, recurrentElements: 0 }, 6);
    compareSteps(
      `trial ${trial} (${channels} channels, kernel ${kernel}, ${bias === null ? 'no' : 'a'} bias)`,
      steps,
      (batch) => bf16Pair([batch.numTokens, channels]),
      (b, step, which, x) => b.causalConv1d(x[which], weight[which], bias?.[which] ?? null, caches[which], 0, step),
    );
  }
});

/** Delta rule shapes: Kimi Linear's (a decay per key channel, 128-wide heads) first, then random ones, every other with a decay per key channel. */
function deltaRuleParams(trial: number): DeltaRuleParams {
  if (trial === 0) return { numKeyHeads: 2, numValueHeads: 2, keyDim: 128, valueDim: 128, decay: 'keyChannel' };
  const numKeyHeads = randInt(rng, 1, 4);
  const decay = trial % 2 === 0 ? 'head' : 'keyChannel';
  return { numKeyHeads, numValueHeads: numKeyHeads * randInt(rng, 1, 2), keyDim: 8 * randInt(rng, 1, 16), valueDim: 8 * randInt(rng, 1, 16), decay };
}

test('gatedDeltaRule matches the CPU over chunks carried in state slots, with a decay per head or per key channel', () => {
  for (let trial = 0; trial < 8; trial++) {
    const p = deltaRuleParams(trial);
    const width = 2 * p.numKeyHeads * p.keyDim + p.numValueHeads * p.valueDim;
    const steps = chunkedSteps(Array.from({ length: randInt(rng, 1, 4) }, () => randInt(rng, 1, 20)));
    const aLog = float32Pair(Float32Array.from({ length: p.numValueHeads }, () => rng() * 2 - 1));
    const dtBias = float32Pair(Float32Array.from({ length: deltaRuleDecays(p) }, () => rng() * 2 - 1));
    const conv = randInt(rng, 0, 40);
    const caches = stateCaches({ kind: 'state', convElements: conv, recurrentElements: p.numValueHeads * p.keyDim * p.valueDim }, 6);
    compareSteps(
      `trial ${trial} (${JSON.stringify(p)})`,
      steps,
      (batch) => ({ qkv: bf16Pair([batch.numTokens, width]), ba: bf16Pair([batch.numTokens, p.numValueHeads + deltaRuleDecays(p)], 3) }),
      (b, step, which, { qkv, ba }) => b.gatedDeltaRule(qkv[which], ba[which], aLog[which], dtBias[which], caches[which], 0, step, p),
    );
  }
});

/** Mamba-2 scan shapes: Granite 4.0's (64 × 128 heads) first, then random ones, every third with a binding time_step_limit. */
function scanParams(trial: number): SelectiveScanParams {
  if (trial === 0) return { numHeads: 4, headDim: 64, numGroups: 1, stateSize: 128, dtMin: 0, dtMax: Infinity };
  const numGroups = randInt(rng, 1, 2);
  const clamp = trial % 3 === 2 ? { dtMin: 0.05, dtMax: 0.5 } : { dtMin: 0, dtMax: Infinity };
  return { numHeads: numGroups * randInt(rng, 1, 3), headDim: randInt(rng, 1, 80), numGroups, stateSize: randInt(rng, 1, 140), ...clamp };
}

test('selectiveScan matches the CPU over chunks carried in state slots', () => {
  for (let trial = 0; trial < 8; trial++) {
    const p = scanParams(trial);
    const width = p.numHeads * p.headDim + 2 * p.numGroups * p.stateSize;
    const steps = chunkedSteps(Array.from({ length: randInt(rng, 1, 4) }, () => randInt(rng, 1, 20)));
    const perHead = () => float32Pair(Float32Array.from({ length: p.numHeads }, () => rng() * 2 - 1));
    const [aLog, dtBias, d] = [perHead(), perHead(), perHead()];
    const caches = stateCaches({ kind: 'state', convElements: randInt(rng, 0, 40), recurrentElements: p.numHeads * p.headDim * p.stateSize }, 6);
    compareSteps(
      `trial ${trial} (${JSON.stringify(p)})`,
      steps,
      (batch) => ({ xbc: bf16Pair([batch.numTokens, width]), dt: bf16Pair([batch.numTokens, p.numHeads], 2), z: bf16Pair([batch.numTokens, p.numHeads * p.headDim], 2) }),
      (b, step, which, { xbc, dt, z }) => b.selectiveScan(xbc[which], dt[which], z[which], aLog[which], dtBias[which], d[which], caches[which], 0, step, p),
    );
  }
});

test('gatedRmsNorm (silu or sigmoid gate) and multiplyGate (σ per element; softplus per element and per head) match the CPU', () => {
  for (let trial = 0; trial < 8; trial++) {
    const [rows, groups, width] = [randInt(rng, 1, 40), randInt(rng, 1, 8), 8 * randInt(rng, 1, 32)];
    const [x, z, w] = [bf16Pair([rows, groups * width]), bf16Pair([rows, groups * width], 3), bf16Pair([width], 2)];
    // Gate logits past softplus's threshold of 20 too.
    const perHead = bf16Pair([rows, groups], 30);
    const gate = trial % 2 === 0 ? 'silu' : 'sigmoid';
    assertClose(`gatedRmsNorm trial ${trial} (${gate})`, { cpu: cpu.gatedRmsNorm(x.cpu, z.cpu, w.cpu, 1e-6, gate), gpu: gpu.gatedRmsNorm(x.gpu, z.gpu, w.gpu, 1e-6, gate) });
    assertClose(`multiplyGate sigmoid trial ${trial}`, { cpu: cpu.multiplyGate(x.cpu, z.cpu, 'sigmoid'), gpu: gpu.multiplyGate(x.gpu, z.gpu, 'sigmoid') });
    assertClose(`multiplyGate softplus trial ${trial}`, { cpu: cpu.multiplyGate(x.cpu, z.cpu, 'softplus'), gpu: gpu.multiplyGate(x.gpu, z.gpu, 'softplus') });
    assertClose(`multiplyGate softplus per head trial ${trial}`, { cpu: cpu.multiplyGate(x.cpu, perHead.cpu, 'softplus'), gpu: gpu.multiplyGate(x.gpu, perHead.gpu, 'softplus') });
  }
});

test('copyStateSlots copies every state layer\'s slots in order, as the CPU does', () => {
  const channels = randInt(rng, 1, 300);
  const kernel = randInt(rng, 2, 5);
  const spec: SequenceStateSpec = { kind: 'state', convElements: (kernel - 1) * channels, recurrentElements: 0 };
  const layout = { numBlocks: 64, blockSize: BLOCK, layers: [spec, spec], stateSlots: 6 };
  const caches = { cpu: cpu.createKvCache(layout), gpu: gpu.createKvCache(layout) };
  const weight = bf16Pair([channels, kernel], 0.5);
  const conv = (steps: BatchDescription[], what: string) =>
    [0, 1].forEach((layer) =>
      compareSteps(`${what}, layer ${layer}`, steps, (batch) => bf16Pair([batch.numTokens, channels]), (b, step, which, x) => b.causalConv1d(x[which], weight[which], null, caches[which], layer, step)),
    );
  conv(chunkedSteps([7, 5]), 'filling slots 2 and 3');
  // Pairs run in order: slot 5 takes 2's state, then 4 takes what 5 now holds, and 2 takes 3's.
  for (const b of ['cpu', 'gpu'] as const) (b === 'cpu' ? cpu : gpu).copyStateSlots(caches[b], Int32Array.of(2, 5, 3), Int32Array.of(5, 4, 2));
  const decode = (slot: number, startPos: number) => ({ tokens: [3], startPos, blockTables: [[slot * 8, slot * 8 + 1]], stateSlot: slot });
  conv([describeBatch([decode(5, 7), decode(4, 7), decode(2, 5)], BLOCK)], 'a decode step from the copied slots');
  assert.throws(() => gpu.copyStateSlots(caches.gpu, Int32Array.of(6), Int32Array.of(0)), /state slot pair 6 -> 0 is outside \[0, 6\)/);
});
