import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import type { KvCache, SelectiveScanParams, Tensor } from '../../../src/backend/backend.ts';
import { CpuBackend } from '../../../src/backend/cpu/cpu-backend.ts';
import { CudaBackend } from '../../../src/backend/cuda/cuda-backend.ts';
import { bf16Tensor, randomBf16Values, seededRng } from '../../../src/bench/synthetic-batch.ts';
import { describeBatch, type BatchDescription } from '../../../src/step/batch.ts';
import { float32Tensor } from '../../../src/tensor/host-ops.ts';
import { randInt, relativeError, testSeed } from '../../helpers/gpu-test-support.ts';

// Mamba-2's selective scan (selective-scan.cu) against its CPU twin, on random shapes (Granite 4.0's
// 64 × 128 heads among them), with several sequences in their own state slots carried over chunks
// of several steps. Inputs are bf16-representable; the states stay float32 on both backends.

const rng = seededRng(testSeed('cuda selective scan'));
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

function float32Pair(count: number, scale: number): Pair {
  const t = float32Tensor(Float32Array.from({ length: count }, () => (rng() * 2 - 1) * scale), [count]);
  return { cpu: cpu.loadWeight(t, { float32: true }), gpu: gpu.loadWeight(t, { float32: true }) };
}

/** Steps of sequences in slots 2, 3, ...: each step runs a random chunk of every sequence not yet done. */
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

function randomParams(trial: number): SelectiveScanParams {
  if (trial === 0) return { numHeads: 4, headDim: 64, numGroups: 1, stateSize: 128, dtMin: 0, dtMax: Infinity };
  const numGroups = randInt(rng, 1, 2);
  const clamp = trial % 3 === 2 ? { dtMin: 0.05, dtMax: 0.5 } : { dtMin: 0, dtMax: Infinity };
  return { numHeads: numGroups * randInt(rng, 1, 3), headDim: randInt(rng, 1, 80), numGroups, stateSize: randInt(rng, 1, 140), ...clamp };
}

test('selectiveScan matches the CPU over chunks carried in state slots', () => {
  for (let trial = 0; trial < 8; trial++) {
    const p = randomParams(trial);
    const width = p.numHeads * p.headDim + 2 * p.numGroups * p.stateSize;
    const steps = chunkedSteps(Array.from({ length: randInt(rng, 1, 4) }, () => randInt(rng, 1, 20)));
    const [aLog, dtBias, d] = [float32Pair(p.numHeads, 1), float32Pair(p.numHeads, 1), float32Pair(p.numHeads, 1)];
    const convElements = randInt(rng, 0, 40);
    const layout = { numBlocks: 64, blockSize: BLOCK, layers: [{ kind: 'state' as const, convElements, recurrentElements: p.numHeads * p.headDim * p.stateSize }], stateSlots: 6 };
    const caches: { cpu: KvCache; gpu: KvCache } = { cpu: cpu.createKvCache(layout), gpu: gpu.createKvCache(layout) };
    steps.forEach((batch, i) => {
      const [xbc, dt, z] = [bf16Pair([batch.numTokens, width]), bf16Pair([batch.numTokens, p.numHeads], 2), bf16Pair([batch.numTokens, p.numHeads * p.headDim], 2)];
      const run = (which: 'cpu' | 'gpu') => {
        const b = which === 'cpu' ? cpu : gpu;
        return b.selectiveScan(xbc[which], dt[which], z[which], aLog[which], dtBias[which], d[which], caches[which], 0, b.beginStep(batch), p);
      };
      const err = relativeError(gpu.toHost(run('gpu')), cpu.toHost(run('cpu')));
      assert.ok(err < TOLERANCE, `trial ${trial} (${JSON.stringify(p)}), step ${i}: relative error ${err}`);
    });
  }
});
