import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import type { KvCache, MlaParams, QueryTemperature, StepInputs, Tensor } from '../../../src/backend/backend.ts';
import { CpuBackend } from '../../../src/backend/cpu/cpu-backend.ts';
import { CudaBackend } from '../../../src/backend/cuda/cuda-backend.ts';
import { BlockAssignment, bf16Tensor, buildBatch, randomBf16Values, type Rng, ropeTables, seededRng, type SeqSpec } from '../../../src/bench/synthetic-batch.ts';
import { MLA_DECODE_KERNELS, type MlaDecodeKernel, mlaDecodeApplies } from '../../../src/backend/cuda/kernels/mla-decode.ts';
import { describeBatch } from '../../../src/step/batch.ts';
import type { KvCacheLayout } from '../../../src/step/kv-cache-layout.ts';
import { pick, randInt, relativeError, testSeed } from '../../helpers/gpu-test-support.ts';

// MLA's ops on the GPU against the CPU backend: the headwise projections (decode GEMV and cuBLAS
// strided-batched), the fused cache write, and the absorbed attention kernel over decode and
// prefill rows mixed in one step, split contexts, head counts from the fixtures' 4 to DeepSeek-V3's
// 128, copy-on-write of MLA blocks, and a decode step replayed as a CUDA graph. Every test with
// decodes runs with both decode kernels (flash: mla-decode.cu, tiled: mla.cu), and random shapes
// check the flash kernel alone. Step tensors are poisoned with NaN, so any output element a kernel
// fails to write fails the comparison.

const rng = seededRng(testSeed('cuda mla'));
const gpu = new CudaBackend({ poisonStepTensors: true });
const cpu = new CpuBackend();
after(() => gpu.dispose());

const TOLERANCE = 1e-2;

/** Runs `body` with `kernel` as the GPU backend's MLA decode kernel. */
function withDecodeKernel(kernel: MlaDecodeKernel, body: () => void): void {
  const chosen = gpu.mlaDecode;
  gpu.mlaDecode = kernel;
  try {
    body();
  } finally {
    gpu.mlaDecode = chosen;
  }
}

interface Pair {
  cpu: Tensor;
  gpu: Tensor;
}

function randomPair(shape: number[], scale = 1): Pair {
  const host = bf16Tensor(shape, randomBf16Values(rng, shape.reduce((a, b) => a * b, 1), scale));
  return { cpu: cpu.loadWeight(host), gpu: gpu.loadWeight(host) };
}

/** RMSNorm weights around 1. */
function normWeights(n: number): Pair {
  const host = bf16Tensor([n], randomBf16Values(rng, n, 0.5).map((v) => 1 + v));
  return { cpu: cpu.loadWeight(host), gpu: gpu.loadWeight(host) };
}

function assertClose(what: string, actual: Tensor, expected: Tensor): void {
  const err = relativeError(gpu.toHost(actual), cpu.toHost(expected));
  assert.ok(err < TOLERANCE, `${what}: relative error ${err}`);
}

test('headwiseLinear: decode-size GEMV and strided-batched GEMM agree with the CPU', () => {
  const cases: [number, number, number, number, number][] = [
    // rows, heads, out, in, width: DeepSeek-V2-Lite's absorptions at decode and prefill sizes.
    [1, 16, 512, 128, 192],
    [1, 16, 128, 512, 512],
    [3, 16, 512, 128, 192],
    [37, 16, 128, 512, 512],
    [2, 128, 512, 128, 192],
  ];
  for (let trial = 0; trial < 20; trial++) {
    const k = 8 * randInt(rng, 1, 40);
    // Outputs that are not a multiple of 8 take the GEMM at any batch size.
    const out = rng() < 0.25 ? randInt(rng, 1, 70) : 8 * randInt(rng, 1, 40);
    cases.push([pick(rng, [1, 2, 3, 4, randInt(rng, 5, 80)]), randInt(rng, 1, 20), out, k, k + 8 * randInt(rng, 0, 3)]);
  }
  for (const [rows, heads, outDim, inDim, width] of cases) {
    const x = randomPair([rows, heads * width]);
    const w = randomPair([heads, outDim, inDim], 1 / Math.sqrt(inDim));
    assertClose(`rows ${rows}, ${heads} heads [${outDim}, ${inDim}] of ${width}`, gpu.headwiseLinear(x.gpu, w.gpu), cpu.headwiseLinear(x.cpu, w.cpu));
  }
});

interface Shape {
  heads: number;
  latent: number;
  rope: number;
  nope: number;
}

const FIXTURE: Shape = { heads: 4, latent: 32, rope: 8, nope: 16 };
const V2_LITE: Shape = { heads: 16, latent: 512, rope: 64, nope: 128 };
const V3: Shape = { heads: 128, latent: 512, rope: 64, nope: 128 };

function mlaParams(s: Shape, queryTemperature: QueryTemperature | null = null): MlaParams {
  return { numHeads: s.heads, latentDim: s.latent, ropeDim: s.rope, nopeDim: s.nope, scale: (s.nope + s.rope) ** -0.5 * 1.2, queryTemperature };
}

/** An attention layer first, so the MLA layer's pool sits at an offset, as in a real model's cache. */
function mlaLayout(s: Shape, numBlocks: number, blockSize: number): KvCacheLayout {
  return { numBlocks, blockSize, layers: [{ kind: 'attention', numKvHeads: 1, headDim: 64, slidingWindow: null }, { kind: 'mla', latentDim: s.latent, ropeDim: s.rope }] };
}
const LAYER = 1;

interface Scenario {
  name: string;
  shape: Shape;
  blockSize: number;
  /** Per step: each sequence's cached and new tokens. */
  steps: SeqSpec[][];
  /** Steps whose attention output is compared (others only fill the cache). */
  attend: boolean[];
  /** Mistral 4's query temperature, applied as the queries are rotated; absent: none. */
  queryTemperature?: QueryTemperature;
}

function runScenario(s: Scenario): void {
  const mla = mlaParams(s.shape, s.queryTemperature ?? null);
  const { heads, latent, rope, nope } = s.shape;
  const numSeqs = Math.max(...s.steps.map((step) => step.length));
  const longest = Math.max(...s.steps.flat().map((q) => q.cached + q.query));
  const numBlocks = numSeqs * (Math.ceil(longest / s.blockSize) + 1) + 4;
  const layout = mlaLayout(s.shape, numBlocks, s.blockSize);
  const caches: [KvCache, KvCache] = [cpu.createKvCache(layout), gpu.createKvCache(layout)];
  const table = ropeTables(longest + 1, rope);
  const ropeTable = { cpu: cpu.uploadRopeTable(table), gpu: gpu.uploadRopeTable(table) };
  const norm = normWeights(latent);
  const blocks = new BlockAssignment(rng, numBlocks, numSeqs);

  s.steps.forEach((specs, i) => {
    const label = `${s.name} step ${i} [${specs.map((q) => `${q.cached}+${q.query}`).join(' ')}]`;
    const batch = buildBatch(specs, blocks, s.blockSize);
    const q = randomPair([batch.numTokens, heads * (nope + rope)]);
    const kv = randomPair([batch.numTokens, latent + rope], 2);
    const steps = [cpu.beginStep(batch), gpu.beginStep(batch)] as const;
    cpu.mlaRopeAndCacheWrite(q.cpu, kv.cpu, norm.cpu, 1e-6, ropeTable.cpu, caches[0], LAYER, steps[0], mla);
    gpu.mlaRopeAndCacheWrite(q.gpu, kv.gpu, norm.gpu, 1e-6, ropeTable.gpu, caches[1], LAYER, steps[1], mla);
    assertClose(`${label}: rotated queries`, q.gpu, q.cpu);
    assertClose(`${label}: normalized and rotated rows`, kv.gpu, kv.cpu);
    if (!s.attend[i]) return;
    const qLatent = randomPair([batch.numTokens, heads * latent], 0.5);
    const out = [cpu.mlaAttention(qLatent.cpu, q.cpu, caches[0], LAYER, steps[0], mla), gpu.mlaAttention(qLatent.gpu, q.gpu, caches[1], LAYER, steps[1], mla)];
    assertClose(`${label}: attention`, out[1], out[0]);
  });
}

function randomChunks(r: Rng, numSeqs: number, maxQuery: number): SeqSpec[] {
  return Array.from({ length: numSeqs }, () => ({ cached: 0, query: randInt(r, 1, maxQuery) }));
}

/** The next step after `prev`: each sequence either decodes one token or runs another chunk. */
function continueSeqs(r: Rng, prev: SeqSpec[], maxQuery: number): SeqSpec[] {
  return prev.map((q) => ({ cached: q.cached + q.query, query: r() < 0.5 ? 1 : randInt(r, 2, maxQuery) }));
}

const SHAPES: [string, Shape][] = [
  ['fixture shape (4 heads, latent 32 + rope 8)', FIXTURE],
  ['DeepSeek-V2-Lite shape (16 heads, latent 512 + rope 64)', V2_LITE],
  // 20 heads: decode rows in two 16-row tiles, prefill tiles whose rows straddle tokens.
  ['20 heads, latent 64 + rope 16', { heads: 20, latent: 64, rope: 16, nope: 8 }],
  ['48 heads, latent 256 + rope 32', { heads: 48, latent: 256, rope: 32, nope: 32 }],
];

for (const kernel of MLA_DECODE_KERNELS) {
  for (const [name, shape] of SHAPES) {
    test(`prefill chunks, then decodes and chunks mixed in one step: ${name} (${kernel} decode)`, () => {
      withDecodeKernel(kernel, () => {
        for (let trial = 0; trial < 3; trial++) {
          const first = randomChunks(rng, randInt(rng, 1, 4), 150);
          runScenario({ name: `${name} trial ${trial}`, shape, blockSize: pick(rng, [4, 16, 64]), steps: [first, continueSeqs(rng, first, 100)], attend: [true, true] });
        }
      });
    });
  }

  test(`Mistral 4's query temperature scales each token's queries by its position as they are rotated (${kernel} decode)`, () => {
    withDecodeKernel(kernel, () => {
      const first = randomChunks(rng, 3, 120);
      const queryTemperature = { floorScale: 16, attnScale: 0.5, positionOffset: 0 };
      runScenario({ name: 'temperature', shape: V2_LITE, blockSize: 16, steps: [first, continueSeqs(rng, first, 40)], attend: [true, true], queryTemperature });
    });
  });

  test(`DeepSeek-V3 shape (128 heads: two row tiles per decode, half a token per prefill tile) (${kernel} decode)`, () => {
    withDecodeKernel(kernel, () => {
      const first = randomChunks(rng, 2, 80);
      runScenario({ name: 'V3', shape: V3, blockSize: 16, steps: [first, continueSeqs(rng, first, 40)], attend: [true, true] });
    });
  });

  test(`long-context decodes split over partitions and merged (${kernel} decode)`, () => {
    withDecodeKernel(kernel, () => {
      for (const [shape, history] of [
        [V2_LITE, [4000, 2500, 1000, 37]],
        [V3, [1500, 300]],
        [FIXTURE, [3000, 5]],
      ] as const) {
        const specs = history.map((n) => ({ cached: 0, query: n }));
        runScenario({ name: `long decode ${shape.heads} heads`, shape, blockSize: 16, steps: [specs, specs.map((q) => ({ cached: q.query, query: 1 }))], attend: [false, true] });
      }
    });
  });

  test(`many decodes in one step (a single partition each) (${kernel} decode)`, () => {
    withDecodeKernel(kernel, () => {
      const history = Array.from({ length: 96 }, () => ({ cached: 0, query: randInt(rng, 1, 300) }));
      runScenario({ name: 'wide decode', shape: V2_LITE, blockSize: 16, steps: [history, history.map((q) => ({ cached: q.query, query: 1 }))], attend: [false, true] });
    });
  });
}

test('flash decode kernel on random shapes: head counts 1 to 128 (padded row tiles), latents 128 to 512, contexts off the 64-key tile, block sizes, batches', () => {
  // Contexts at, around and between tile and block boundaries; batches with one long decode beside
  // short ones leave whole partitions empty for the short ones.
  const contexts = [1, 2, 63, 64, 65, 127, 128, 129, 255, 256, 257, 511, 1000, 1023, 1025, 2047, 2500];
  const shapes: Shape[] = [V2_LITE, V3, { heads: 8, latent: 512, rope: 64, nope: 128 }, { heads: 1, latent: 512, rope: 64, nope: 64 },
    { heads: 20, latent: 128, rope: 16, nope: 32 }, { heads: 48, latent: 256, rope: 32, nope: 32 }, { heads: 64, latent: 512, rope: 64, nope: 128 },
    { heads: 33, latent: 384, rope: 48, nope: 16 }];
  let ran = 0;
  withDecodeKernel('flash', () => {
    for (let trial = 0; trial < 16; trial++) {
      const shape = trial < shapes.length ? shapes[trial] : pick(rng, shapes);
      if (!mlaDecodeApplies(gpu.device, mlaParams(shape))) continue;
      const numSeqs = randInt(rng, 1, shape.heads >= 64 ? 3 : 6);
      const history = Array.from({ length: numSeqs }, () => ({ cached: 0, query: pick(rng, contexts) }));
      const blockSize = pick(rng, [4, 16, 32, 64]);
      runScenario({ name: `flash trial ${trial} (${shape.heads} heads, ${shape.latent} + ${shape.rope}, block ${blockSize})`, shape, blockSize, steps: [history, history.map((q) => ({ cached: q.query, query: 1 }))], attend: [false, true] });
      ran++;
    }
  });
  assert.ok(ran > 0, `no random shape fits mla_decode_kernel's shared memory on ${gpu.device.info.name}`);
});

test('a chunk after a long cached prefix (a prefix-cache hit, or a later prefill chunk)', () => {
  runScenario({ name: 'chunk after prefix', shape: V2_LITE, blockSize: 16, steps: [[{ cached: 0, query: 700 }], [{ cached: 700, query: 300 }]], attend: [false, true] });
});

for (const kernel of MLA_DECODE_KERNELS) {
  test(`copyBlocks copies MLA rows beside attention keys and values (${kernel} decode)`, () => {
    withDecodeKernel(kernel, () => {
      const shape = V2_LITE;
      const mla = mlaParams(shape);
      const blockSize = 16;
      const layout = mlaLayout(shape, 24, blockSize);
      const caches: [KvCache, KvCache] = [cpu.createKvCache(layout), gpu.createKvCache(layout)];
      const table = ropeTables(256, shape.rope);
      const rope = [cpu.uploadRopeTable(table), gpu.uploadRopeTable(table)];
      const norm = normWeights(shape.latent);
      const blocks = new BlockAssignment(rng, layout.numBlocks, 2);
      blocks.ensure(0, 40, blockSize);
      blocks.ensure(1, 40, blockSize);
      const fill = describeBatch([{ tokens: new Array<number>(40).fill(0), startPos: 0, blockTables: [blocks.tables[0]] }], blockSize);
      const fillSteps = [cpu.beginStep(fill), gpu.beginStep(fill)] as const;
      const q = randomPair([fill.numTokens, shape.heads * (shape.nope + shape.rope)]);
      const kv = randomPair([fill.numTokens, shape.latent + shape.rope]);
      cpu.mlaRopeAndCacheWrite(q.cpu, kv.cpu, norm.cpu, 1e-6, rope[0], caches[0], LAYER, fillSteps[0], mla);
      gpu.mlaRopeAndCacheWrite(q.gpu, kv.gpu, norm.gpu, 1e-6, rope[1], caches[1], LAYER, fillSteps[1], mla);
      // Sequence 1's blocks take copies of sequence 0's (a fork); a decode reads all 40 rows from them.
      const src = Int32Array.from(blocks.tables[0]);
      const dst = Int32Array.from(blocks.tables[1]);
      cpu.copyBlocks(caches[0], src, dst);
      gpu.copyBlocks(caches[1], src, dst);
      const read = describeBatch([{ tokens: [0], startPos: 39, blockTables: [blocks.tables[1]] }], blockSize);
      const steps = [cpu.beginStep(read), gpu.beginStep(read)] as const;
      const qLatent = randomPair([1, shape.heads * shape.latent], 0.5);
      const q1 = randomPair([1, shape.heads * (shape.nope + shape.rope)]);
      assertClose('attention over copied blocks', gpu.mlaAttention(qLatent.gpu, q1.gpu, caches[1], LAYER, steps[1], mla), cpu.mlaAttention(qLatent.cpu, q1.cpu, caches[0], LAYER, steps[0], mla));
    });
  });
}

for (const kernel of MLA_DECODE_KERNELS) {
  test(`a decode step captured as a CUDA graph replays for the next tokens (${kernel} decode)`, () => {
    withDecodeKernel(kernel, () => {
      const shape = V2_LITE;
      const mla = mlaParams(shape);
      const { heads, latent, rope, nope } = shape;
      const layout = mlaLayout(shape, 96, 16);
      const caches: [KvCache, KvCache] = [cpu.createKvCache(layout), gpu.createKvCache(layout)];
      const table = ropeTables(1024, rope);
      const ropeTable = [cpu.uploadRopeTable(table), gpu.uploadRopeTable(table)];
      const norm = normWeights(latent);
      const blocks = new BlockAssignment(rng, layout.numBlocks, 3);
      const vocab = 1000;
      const qTable = randomPair([vocab, heads * (nope + rope)]);
      const kvTable = randomPair([vocab, latent + rope], 2);
      const keyAbsorption = randomPair([heads, latent, nope], 1 / Math.sqrt(nope));
      const valueAbsorption = randomPair([heads, 128, latent], 1 / Math.sqrt(latent));
      const backends = [cpu, gpu] as const;
      // q and kv from the step's token ids, so replays with new ids see new data.
      const forward = (i: 0 | 1, step: StepInputs): Tensor => {
        const b = backends[i];
        const on = (p: Pair) => (i === 0 ? p.cpu : p.gpu);
        const q = b.embedding(on(qTable), step, 1, 0);
        const kv = b.embedding(on(kvTable), step, 1, 0);
        b.mlaRopeAndCacheWrite(q, kv, on(norm), 1e-6, ropeTable[i], caches[i], LAYER, step, mla);
        const latentOut = b.mlaAttention(b.headwiseLinear(q, on(keyAbsorption)), q, caches[i], LAYER, step, mla);
        return b.headwiseLinear(latentOut, on(valueAbsorption));
      };
      const history = [{ cached: 0, query: 300 }, { cached: 0, query: 200 }, { cached: 0, query: 250 }];
      const decodeStep = (n: number) => history.map((q) => ({ cached: q.query + n, query: 1 }));
      const fill = buildBatch(history, blocks, layout.blockSize);
      forward(0, cpu.beginStep(fill));
      forward(1, gpu.beginStep(fill));

      // Capture at the longest context the replays will see; one eager run first compiles the kernels
      // (module loads are not stream work). It writes position 303, which no replay reads.
      const capturedAt = buildBatch(decodeStep(3), blocks, layout.blockSize);
      forward(1, gpu.beginStep(capturedAt));
      const captureStep = gpu.beginStep(capturedAt);
      const captured: { out?: Tensor } = {};
      const graph = gpu.captureGraph(() => {
        captured.out = forward(1, captureStep);
      });
      try {
        for (let n = 0; n < 3; n++) {
          const batch = buildBatch(decodeStep(n), blocks, layout.blockSize);
          batch.tokenIds = Int32Array.from([n, n + 1, n + 2]);
          assert.equal(batch.maxBlocksPerSeq, capturedAt.maxBlocksPerSeq, 'replay needs the captured table width');
          const expected = cpu.toHost(forward(0, cpu.beginStep(batch)));
          gpu.beginStep(batch);
          graph.replay();
          const err = relativeError(gpu.toHost(captured.out!), expected);
          assert.ok(err < TOLERANCE, `replay ${n}: relative error ${err}`);
        }
      } finally {
        graph.dispose();
      }
    });
  });
}
