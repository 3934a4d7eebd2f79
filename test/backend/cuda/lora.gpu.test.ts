import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import type { Activation, LoraSliceValues, LoraWeights, Tensor } from '../../../src/backend/backend.ts';
import { CpuBackend } from '../../../src/backend/cpu/cpu-backend.ts';
import { CudaBackend } from '../../../src/backend/cuda/cuda-backend.ts';
import { bf16Tensor, randomBf16Values, seededRng } from '../../../src/bench/synthetic-batch.ts';
import { describeBatch, type SequenceChunk } from '../../../src/step/batch.ts';
import { pick, randInt, relativeError, testSeed } from '../../helpers/gpu-test-support.ts';

// The batched LoRA op (kernels/lora.cu) and the gated activation alone against the CPU backend:
// random shapes, ranks (up to 256, and ranks that are not multiples of 8), slices, and steps
// mixing adapters, empty slices and base tokens. Inputs are bf16-representable on both sides.

const rng = seededRng(testSeed('cuda lora'));
const gpu = new CudaBackend({ arenaBytes: 64 * 1024 * 1024, poisonStepTensors: true });
const cpu = new CpuBackend();
after(() => gpu.dispose());

const TOLERANCE = 1e-2;

function pair(shape: number[], scale = 1): { cpu: Tensor; gpu: Tensor } {
  const t = bf16Tensor(shape, randomBf16Values(rng, shape.reduce((a, b) => a * b, 1), scale));
  return { cpu: cpu.loadWeight(t), gpu: gpu.loadWeight(t) };
}

interface Case {
  inDim: number;
  sliceRows: number[];
  slots: number;
  maxRank: number;
}

/** Both backends' weights with the same adapters in every slot (some slices left empty). */
function loraWeights(c: Case): { cpu: LoraWeights; gpu: LoraWeights } {
  const shape = { slots: c.slots, maxRank: c.maxRank, inFeatures: c.inDim, sliceRows: c.sliceRows };
  const w = { cpu: cpu.createLoraWeights(shape), gpu: gpu.createLoraWeights(shape) };
  for (let slot = 0; slot < c.slots; slot++) {
    const rank = randInt(rng, 1, c.maxRank);
    // Scaled so that the delta is of the order of the output it is added to.
    const slices = c.sliceRows.map((rows): LoraSliceValues | null =>
      rng() < 0.2 ? null : { a: randomBf16Values(rng, rank * c.inDim, 1 / Math.sqrt(c.inDim)), b: randomBf16Values(rng, rows * rank, 1 / Math.sqrt(rank)) },
    );
    cpu.setLoraSlot(w.cpu, slot, rank, slices);
    gpu.setLoraSlot(w.gpu, slot, rank, slices);
  }
  return w;
}

function chunks(numSeqs: number, slots: number, maxTokens: number): SequenceChunk[] {
  return Array.from({ length: numSeqs }, (_, s) => {
    const slot = randInt(rng, -1, slots - 1);
    return { tokens: new Array<number>(randInt(rng, 1, maxTokens)).fill(1), startPos: 0, blockTable: [s], ...(slot >= 0 ? { loraSlot: slot } : {}) };
  });
}

test('addLora equals the CPU reference over random shapes, ranks, slices and mixed steps', () => {
  for (let trial = 0; trial < 40; trial++) {
    const c: Case = {
      inDim: 8 * randInt(rng, 1, 512),
      sliceRows: Array.from({ length: randInt(rng, 1, 3) }, () => randInt(rng, 1, 700)),
      slots: randInt(rng, 1, 8),
      maxRank: pick(rng, [1, 4, 8, 13, 16, 64, 256]),
    };
    const w = loraWeights(c);
    const batch = describeBatch(chunks(randInt(rng, 1, 12), c.slots, pick(rng, [1, 1, 7, 70])), 128);
    if (batch.loraSlots === null) continue;
    const x = pair([batch.numTokens, c.inDim]);
    const outDim = c.sliceRows.reduce((a, b) => a + b, 0);
    const out = pair([batch.numTokens, outDim]);
    cpu.addLora(out.cpu, x.cpu, w.cpu, cpu.beginStep(batch));
    gpu.addLora(out.gpu, x.gpu, w.gpu, gpu.beginStep(batch));
    const err = relativeError(gpu.toHost(out.gpu), cpu.toHost(out.cpu));
    assert.ok(err < TOLERANCE, `trial ${trial} ${JSON.stringify(c)}, ${batch.numTokens} tokens: relative error ${err}`);
  }
});

test('a slot set again replaces its adapter: a step of the same shape reads the new weights', () => {
  const c: Case = { inDim: 256, sliceRows: [128, 64, 64], slots: 2, maxRank: 16 };
  const w = loraWeights(c);
  const batch = describeBatch(chunks(4, c.slots, 3), 128);
  const x = pair([batch.numTokens, c.inDim]);
  for (let round = 0; round < 2; round++) {
    if (round === 1) {
      const slices = c.sliceRows.map((rows) => ({ a: randomBf16Values(rng, 8 * c.inDim, 0.1), b: randomBf16Values(rng, rows * 8, 0.3) }));
      cpu.setLoraSlot(w.cpu, 1, 8, slices);
      gpu.setLoraSlot(w.gpu, 1, 8, slices);
    }
    const zero = bf16Tensor([batch.numTokens, 256], new Float32Array(batch.numTokens * 256));
    const out = { cpu: cpu.loadWeight(zero), gpu: gpu.loadWeight(zero) };
    cpu.addLora(out.cpu, x.cpu, w.cpu, cpu.beginStep(batch));
    gpu.addLora(out.gpu, x.gpu, w.gpu, gpu.beginStep(batch));
    const err = relativeError(gpu.toHost(out.gpu), cpu.toHost(out.cpu));
    assert.ok(err < TOLERANCE, `round ${round}: relative error ${err}`);
  }
});

test('gatedActivation equals the CPU reference for every activation', () => {
  const activations: Activation[] = [{ kind: 'silu' }, { kind: 'gelu-tanh' }, { kind: 'clamped-swiglu', alpha: 1.702, limit: 7 }];
  for (const activation of activations) {
    const rows = randInt(rng, 1, 40);
    const n = 8 * randInt(rng, 1, 300);
    const x = pair([rows, 2 * n], 4);
    const err = relativeError(gpu.toHost(gpu.gatedActivation(x.gpu, activation)), cpu.toHost(cpu.gatedActivation(x.cpu, activation)));
    assert.ok(err < TOLERANCE, `${activation.kind}: relative error ${err}`);
  }
});
