import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import type { Activation, LoraSliceValues, LoraWeights, Tensor } from '../../../src/backend/backend.ts';
import { CpuBackend } from '../../../src/backend/cpu/cpu-backend.ts';
import { CudaBackend } from '../../../src/backend/cuda/cuda-backend.ts';
import { bf16Tensor, randomBf16Values, seededRng } from '../../../src/bench/synthetic-batch.ts';
import { describeBatch, type BatchDescription, type SequenceChunk } from '../../../src/step/batch.ts';
import { pick, randInt, relativeError, testSeed } from '../../helpers/gpu-test-support.ts';

// The batched LoRA op (kernels/lora.cu) and the gated activation alone against the CPU backend:
// random shapes, ranks (up to 256, and ranks that are not multiples of 8), slices, and steps
// mixing adapters, empty slices and base tokens: segments of 1 to 600 tokens, sequences of one
// adapter interleaved with others' (the kernels sort them into tiles), decode-sized steps whose
// shrink splits the input width. Inputs are bf16-representable on both sides; each row is
// checked, and base-model rows must come back untouched.

const rng = seededRng(testSeed('cuda lora'));
const gpu = new CudaBackend({ arenaBytes: 256 * 1024 * 1024, poisonStepTensors: true });
const cpu = new CpuBackend();
after(() => gpu.dispose());

/** Per row: the GPU rounds each output to bf16 once (the CPU keeps float32), ~2^-9 relative. */
const TOLERANCE = 1e-2;
const BLOCK_SIZE = 128;

interface Tensors {
  cpu: Tensor;
  gpu: Tensor;
  values: Float32Array;
}

function pair(shape: number[], scale = 1): Tensors {
  const values = randomBf16Values(rng, shape.reduce((a, b) => a * b, 1), scale);
  const t = bf16Tensor(shape, values);
  return { cpu: cpu.loadWeight(t), gpu: gpu.loadWeight(t), values };
}

interface Case {
  inDim: number;
  sliceRows: number[];
  slots: number;
  maxRank: number;
  /** Each slot's rank; random up to maxRank when absent. */
  rank?: number;
}

/** Both backends' weights with the same adapters in every slot (some slices left empty). */
function loraWeights(c: Case): { cpu: LoraWeights; gpu: LoraWeights } {
  const shape = { slots: c.slots, maxRank: c.maxRank, inFeatures: c.inDim, sliceRows: c.sliceRows };
  const w = { cpu: cpu.createLoraWeights(shape), gpu: gpu.createLoraWeights(shape) };
  for (let slot = 0; slot < c.slots; slot++) {
    const rank = c.rank ?? randInt(rng, 1, c.maxRank);
    // Scaled so that the delta is of the order of the output it is added to.
    const slices = c.sliceRows.map((rows): LoraSliceValues | null =>
      rng() < 0.2 ? null : { a: randomBf16Values(rng, rank * c.inDim, 1 / Math.sqrt(c.inDim)), b: randomBf16Values(rng, rows * rank, 1 / Math.sqrt(rank)) },
    );
    cpu.setLoraSlot(w.cpu, slot, rank, slices);
    gpu.setLoraSlot(w.gpu, slot, rank, slices);
  }
  return w;
}

/** Sequences of `lengths` tokens, each with a random slot or none (-1). */
function chunks(lengths: number[], slots: number): SequenceChunk[] {
  let block = 0;
  return lengths.map((length) => {
    const slot = randInt(rng, -1, slots - 1);
    const blockTable = Array.from({ length: Math.ceil(length / BLOCK_SIZE) }, () => block++);
    return { tokens: new Array<number>(length).fill(1), startPos: 0, blockTables: [blockTable], ...(slot >= 0 ? { loraSlot: slot } : {}) };
  });
}

/** Runs addLora on both backends and checks every row: adapted rows against the CPU, base rows unchanged. */
function checkStep(c: Case, w: { cpu: LoraWeights; gpu: LoraWeights }, batch: BatchDescription, label: string): void {
  const x = pair([batch.numTokens, c.inDim]);
  const outDim = c.sliceRows.reduce((a, b) => a + b, 0);
  const out = pair([batch.numTokens, outDim]);
  cpu.addLora(out.cpu, x.cpu, w.cpu, cpu.beginStep(batch));
  gpu.addLora(out.gpu, x.gpu, w.gpu, gpu.beginStep(batch));
  const got = gpu.toHost(out.gpu);
  const want = cpu.toHost(out.cpu);
  for (let t = 0; t < batch.numTokens; t++) {
    const row = (a: Float32Array) => a.subarray(t * outDim, (t + 1) * outDim);
    if (batch.loraSlots![t] < 0) {
      assert.deepEqual(row(got), row(out.values), `${label}: base-model row ${t} changed`);
    } else {
      const err = relativeError(row(got), row(want));
      assert.ok(err < TOLERANCE, `${label}: row ${t} (slot ${batch.loraSlots![t]}) relative error ${err}`);
    }
  }
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
    const maxTokens = pick(rng, [1, 1, 7, 70]);
    const batch = describeBatch(chunks(Array.from({ length: randInt(rng, 1, 12) }, () => randInt(rng, 1, maxTokens)), c.slots), BLOCK_SIZE);
    if (batch.loraSlots === null) continue;
    checkStep(c, w, batch, `trial ${trial} ${JSON.stringify(c)}, ${batch.numTokens} tokens`);
  }
});

test('segments of 1 to 600 tokens at ranks 8, 16 and 64, with base-model sequences between them', () => {
  for (let trial = 0; trial < 16; trial++) {
    const c: Case = {
      inDim: 8 * randInt(rng, 1, 64),
      sliceRows: Array.from({ length: randInt(rng, 1, 3) }, () => 8 * randInt(rng, 1, 32)),
      slots: randInt(rng, 1, 32),
      maxRank: pick(rng, [8, 16, 64]),
    };
    c.rank = c.maxRank;
    const w = loraWeights(c);
    const lengths = Array.from({ length: randInt(rng, 1, 12) }, () => (rng() < 0.6 ? randInt(rng, 1, 4) : randInt(rng, 1, 600)));
    const batch = describeBatch(chunks(lengths, c.slots), BLOCK_SIZE);
    if (batch.loraSlots === null) continue;
    checkStep(c, w, batch, `trial ${trial} ${JSON.stringify(c)}, sequences of ${lengths.join(', ')} tokens`);
  }
});

test("decode and prefill steps of an 8B model's shapes: q/k/v and down projections, 32 adapters round robin", () => {
  const projections: Case[] = [
    { inDim: 4096, sliceRows: [4096, 1024, 1024], slots: 32, maxRank: 16, rank: 16 },
    { inDim: 14336, sliceRows: [4096], slots: 32, maxRank: 64, rank: 64 },
  ];
  for (const c of projections) {
    const w = loraWeights(c);
    // 128 decoding sequences, adapters round robin (the bench's workload), a few on the base model.
    const decode = Array.from({ length: 128 }, (_, i): SequenceChunk => ({ tokens: [1], startPos: 0, blockTables: [[i]], ...(i % 9 === 8 ? {} : { loraSlot: i % c.slots }) }));
    checkStep(c, w, describeBatch(decode, BLOCK_SIZE), `decode ${JSON.stringify(c)}`);
    // A 512-token prefill chunk of one adapter beside decodes of others.
    const prefill: SequenceChunk[] = [{ tokens: new Array<number>(512).fill(1), startPos: 0, blockTables: [[0, 1, 2, 3]], loraSlot: 5 }, ...decode.slice(0, 20).map((d, i) => ({ ...d, blockTables: [[4 + i]] }))];
    checkStep(c, w, describeBatch(prefill, BLOCK_SIZE), `prefill ${JSON.stringify(c)}`);
  }
});

test('a slot set again replaces its adapter: a step of the same shape reads the new weights', () => {
  const c: Case = { inDim: 256, sliceRows: [128, 64, 64], slots: 2, maxRank: 16 };
  const w = loraWeights(c);
  const batch = describeBatch([0, 1, -1, 1].map((slot, i) => ({ tokens: [1, 2], startPos: 0, blockTables: [[i]], ...(slot >= 0 ? { loraSlot: slot } : {}) })), BLOCK_SIZE);
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
