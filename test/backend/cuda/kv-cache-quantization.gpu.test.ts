import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import type { AttentionParams, KvCache, MlaParams, Tensor } from '../../../src/backend/backend.ts';
import { CpuBackend } from '../../../src/backend/cpu/cpu-backend.ts';
import { CudaBackend } from '../../../src/backend/cuda/cuda-backend.ts';
import { LLM } from '../../../src/engine/llm.ts';
import { perplexity } from '../../../src/eval/perplexity.ts';
import { buildRopeTable } from '../../../src/layers/rotary.ts';
import { BlockAssignment, bf16Tensor, buildBatch, randomBf16Values, type Rng, ropeTables, seededRng, type SeqSpec } from '../../../src/bench/synthetic-batch.ts';
import type { KvCacheDtype, KvCacheLayout } from '../../../src/step/kv-cache-layout.ts';
import { MLA_DECODE_KERNELS } from '../../../src/backend/cuda/kernels/mla-decode.ts';
import { kvCodeTolerance, pick, randInt, relativeError, testSeed } from '../../helpers/gpu-test-support.ts';
import { plainAttention } from '../../helpers/kv-layout.ts';
import { randomHeadNorm } from '../../helpers/attention-scenario.ts';

// Quantized KV caches on the GPU against the CPU twin (backend/cpu/ops/kv-codes.ts): the quantizing
// cache write after RoPE (fp8 with per-tensor scales, int8 with a scale per token and kv head, int4
// with a scale and minimum per token and kv head), and the decode, prefill (both kernels on Hopper,
// 8-bit caches) and MLA attention kernels reading the codes back, over head dims, GQA, block
// sizes, split decodes, windows, soft-capping, sinks and StreamingLLM; quantized blocks moved by
// copy-on-write, by a swap out to host memory and back, and slot by slot (copySlots); keel-tiny's perplexity on CUDA against the CPU's with the same cache dtype. The CPU keeps
// keys in float32 and the GPU in bf16 before quantizing, so a value near a rounding boundary may
// land one code apart: the outputs are compared within kvCodeTolerance (gpu-test-support.ts).

const rng = seededRng(testSeed('cuda kv quantization'));
const gpu = new CudaBackend({ poisonStepTensors: true });
const cpu = new CpuBackend();
after(() => gpu.dispose());

const hopperOnly = gpu.device.info.arch === 'sm_90a' ? false : `needs a Hopper GPU (sm_90a), not ${gpu.device.info.arch}`;

const LAYER = 1;
const DTYPES: { dtype: Exclude<KvCacheDtype, 'auto'>; kvScales: { k: number; v: number } }[] = [
  { dtype: 'fp8_e4m3', kvScales: { k: 1, v: 1 } },
  { dtype: 'fp8_e4m3', kvScales: { k: 0.02, v: 0.005 } },
  { dtype: 'int8', kvScales: { k: 1, v: 1 } },
  { dtype: 'int4', kvScales: { k: 1, v: 1 } },
];

interface Scenario {
  name: string;
  dtype: KvCacheDtype;
  kvScales: { k: number; v: number };
  headDim: number;
  numKvHeads: number;
  group: number;
  blockSize: number;
  window: number | null;
  steps: SeqSpec[][];
  softcap?: number;
  sinks?: Float32Array;
  streaming?: { sinks: number; window: number };
  /** Random q/k head norms (Qwen3) applied by ropeAndCacheWrite before the quantized write. */
  headNorm?: boolean;
}

function attentionScenario(s: Scenario): { caches: [KvCache, KvCache]; shapes: readonly [AttentionParams, AttentionParams]; blocks: BlockAssignment } {
  const plain = plainAttention({ numHeads: s.numKvHeads * s.group, numKvHeads: s.numKvHeads, headDim: s.headDim, scale: s.headDim ** -0.5, slidingWindow: s.window });
  const numSeqs = Math.max(...s.steps.map((step) => step.length));
  const longest = Math.max(...s.steps.flat().map((q) => q.cached + q.query));
  const numBlocks = 2 * numSeqs * (Math.ceil(longest / s.blockSize) + 1) + 4;
  const layer = { kind: 'attention' as const, numKvHeads: s.numKvHeads, headDim: s.headDim, slidingWindow: s.window };
  const layout: KvCacheLayout = { numBlocks, blockSize: s.blockSize, layers: [layer, layer], dtype: s.dtype };
  const caches: [KvCache, KvCache] = [cpu.createKvCache(layout), gpu.createKvCache(layout)];
  const table = buildRopeTable({ rotaryDim: s.headDim, theta: 10000, scaling: { type: 'default' }, maxPositionEmbeddings: longest + 1 }, longest + 1);
  const rope = [cpu.uploadRopeTable(table), gpu.uploadRopeTable(table)] as const;
  const sinks = s.sinks === undefined ? null : bf16Tensor([plain.numHeads], s.sinks);
  const options = (b: CpuBackend | CudaBackend, table: Tensor): AttentionParams => ({
    ...plain,
    softcap: s.softcap ?? null,
    sinks: sinks && b.loadWeight(sinks),
    streaming: s.streaming === undefined ? null : { ...s.streaming, rope: table },
    kvScales: s.kvScales,
  });
  const shapes = [options(cpu, rope[0]), options(gpu, rope[1])] as const;
  const blocks = new BlockAssignment(rng, numBlocks, numSeqs);
  const width = (plain.numHeads + 2 * plain.numKvHeads) * s.headDim;
  const norms = s.headNorm ? randomHeadNorm(rng, s.headDim, false, cpu, gpu) : [null, null];
  s.steps.forEach((specs, i) => {
    const label = `${s.name} step ${i} [${specs.map((q) => `${q.cached}+${q.query}`).join(' ')}]`;
    const batch = buildBatch(specs, blocks, s.blockSize);
    const host = bf16Tensor([batch.numTokens, width], randomBf16Values(rng, batch.numTokens * width, 2));
    const qkv = [cpu.loadWeight(host), gpu.loadWeight(host)] as const;
    const steps = [cpu.beginStep(batch), gpu.beginStep(batch)] as const;
    cpu.ropeAndCacheWrite(qkv[0], rope[0], caches[0], LAYER, steps[0], shapes[0], norms[0]);
    gpu.ropeAndCacheWrite(qkv[1], rope[1], caches[1], LAYER, steps[1], shapes[1], norms[1]);
    const out = [cpu.attention(qkv[0], caches[0], LAYER, steps[0], shapes[0]), gpu.attention(qkv[1], caches[1], LAYER, steps[1], shapes[1])];
    const err = relativeError(gpu.toHost(out[1]), cpu.toHost(out[0]));
    assert.ok(err < kvCodeTolerance(s.dtype), `${label}: attention relative error ${err}`);
  });
  return { caches, shapes, blocks };
}

function chunks(r: Rng, numSeqs: number, maxQuery: number): SeqSpec[] {
  return Array.from({ length: numSeqs }, () => ({ cached: 0, query: randInt(r, 1, maxQuery) }));
}

function next(r: Rng, prev: SeqSpec[], maxQuery: number): SeqSpec[] {
  return prev.map((q) => ({ cached: q.cached + q.query, query: r() < 0.5 ? 1 : randInt(r, 2, maxQuery) }));
}

for (const { dtype, kvScales } of DTYPES) {
  const tag = `${dtype} (k ${kvScales.k}, v ${kvScales.v})`;
  for (const headDim of [64, 72, 96, 128, 256, 512]) {
    test(`${tag}: prefill chunks then a mixed decode/chunk step, head dim ${headDim}`, () => {
      for (let trial = 0; trial < 2; trial++) {
        const first = chunks(rng, randInt(rng, 1, 4), 200);
        attentionScenario({
          name: `${tag} d${headDim} trial ${trial}`,
          dtype,
          kvScales,
          headDim,
          numKvHeads: randInt(rng, 1, 2),
          group: pick(rng, [1, 2, 4, 8, 16]),
          blockSize: pick(rng, [8, 16, 32]),
          window: rng() < 0.3 ? randInt(rng, 16, 120) : null,
          steps: [first, next(rng, first, 150)],
          headNorm: trial === 1,
        });
      }
    });
  }

  test(`${tag}: prefill chunks on the Hopper kernel (prefill-attention-wgmma.cu), head dims 64, 96, 128, 192 and 256`, { skip: hopperOnly }, () => {
    const path = gpu.prefillAttention;
    gpu.prefillAttention = 'wgmma'; // throws rather than fall back to the legacy kernel
    try {
      for (const headDim of [64, 96, 128, 192, 256]) {
        const first = chunks(rng, randInt(rng, 1, 3), 300);
        attentionScenario({
          name: `${tag} wgmma d${headDim}`,
          dtype,
          kvScales,
          headDim,
          numKvHeads: randInt(rng, 1, 2),
          group: pick(rng, [1, 2, 4]),
          blockSize: pick(rng, [8, 16, 32]),
          window: rng() < 0.3 ? randInt(rng, 16, 200) : null,
          steps: [first, next(rng, first, 200)],
        });
      }
    } finally {
      gpu.prefillAttention = path;
    }
  });

  test(`${tag}: long-context decodes split over partitions`, () => {
    const first = chunks(rng, 3, 1500);
    attentionScenario({ name: `${tag} split`, dtype, kvScales, headDim: 128, numKvHeads: 2, group: 4, blockSize: 16, window: null, steps: [first, first.map((q) => ({ cached: q.cached + q.query, query: 1 }))] });
  });

  test(`${tag}: soft-capping, learned sinks and StreamingLLM read quantized keys alike`, () => {
    const first = chunks(rng, 2, 300);
    attentionScenario({
      name: `${tag} options`,
      dtype,
      kvScales,
      headDim: 128,
      numKvHeads: 2,
      group: 4,
      blockSize: 16,
      window: null,
      softcap: 30,
      sinks: randomBf16Values(rng, 8, 1),
      streaming: { sinks: 4, window: 64 },
      steps: [first, next(rng, first, 40)],
    });
  });

  test(`${tag}: soft-capping and learned sinks without StreamingLLM (decode on tensor cores), one partition and several`, () => {
    for (const [name, longest] of [['short', 300], ['split', 1500]] as const) {
      const first = chunks(rng, 2, longest);
      const group = pick(rng, [1, 2, 4, 8]);
      attentionScenario({
        name: `${tag} capped ${name}`,
        dtype,
        kvScales,
        headDim: pick(rng, [64, 128, 256]),
        numKvHeads: 2,
        group,
        blockSize: 16,
        window: null,
        softcap: 30,
        sinks: randomBf16Values(rng, 2 * group, 1),
        steps: [first, first.map((q) => ({ cached: q.cached + q.query, query: 1 }))],
      });
    }
  });

  test(`${tag}: a copied block (copy-on-write) carries its codes and scales`, () => {
    attendThroughMovedBlocks(`${tag} cow`, dtype, kvScales, (b, cache, src, dst) => b.copyBlocks(cache, src, dst));
  });

  test(`${tag}: blocks swapped out to host memory and into other blocks carry their codes and scales`, () => {
    attendThroughMovedBlocks(`${tag} swap`, dtype, kvScales, (b, cache, src, dst) => {
      const swap = b.createSwapSpace({ ...cache.layout, numBlocks: src.length });
      const host = Int32Array.from(src, (_, i) => i);
      b.swapOut(cache, swap, src, host);
      b.swapIn(cache, swap, host, dst);
      b.awaitSwapIns();
    });
  });

  test(`${tag}: slots moved one by one (copySlots, as tree verification moves accepted tokens) carry their codes and scales`, () => {
    attendThroughMovedBlocks(`${tag} slots`, dtype, kvScales, (b, cache, src, dst) => {
      const slots = (blocks: Int32Array) => Int32Array.from({ length: blocks.length * 16 }, (_, i) => blocks[Math.floor(i / 16)] * 16 + (i % 16));
      b.copySlots(cache, slots(src), slots(dst));
    });
  });
}

/**
 * Writes a sequence of 37 tokens and then a decode token, moves its three blocks to unused ids on
 * both backends with `move`, and attends through the moved blocks: the GPU against the CPU.
 */
function attendThroughMovedBlocks(
  name: string,
  dtype: KvCacheDtype,
  kvScales: { k: number; v: number },
  move: (b: CpuBackend | CudaBackend, cache: KvCache, src: Int32Array, dst: Int32Array) => void,
): void {
  const specs = [{ cached: 0, query: 37 }];
  const { caches, shapes, blocks } = attentionScenario({ name, dtype, kvScales, headDim: 64, numKvHeads: 2, group: 2, blockSize: 16, window: null, steps: [specs] });
  const batch = buildBatch([{ cached: 37, query: 1 }], blocks, 16);
  const width = 8 * 64;
  const host = bf16Tensor([1, width], randomBf16Values(rng, width, 2));
  for (const [b, cache, shape] of [[cpu, caches[0], shapes[0]], [gpu, caches[1], shapes[1]]] as const) {
    b.ropeAndCacheWrite(b.loadWeight(host), b.uploadRopeTable(ropeTables(64, 64)), cache, LAYER, b.beginStep(batch), shape);
  }
  const src = batch.blockTables.slice(0, 3);
  const unused = Array.from({ length: caches[0].layout.numBlocks }, (_, i) => i).filter((b) => !src.includes(b));
  const dst = Int32Array.from(unused.slice(0, 3));
  move(cpu, caches[0], src, dst);
  move(gpu, caches[1], src, dst);
  const moved = { ...batch, blockTables: Int32Array.from([...dst, ...batch.blockTables.slice(3)]) };
  const qkv = [cpu.loadWeight(host), gpu.loadWeight(host)] as const;
  const out = [
    cpu.attention(qkv[0], caches[0], LAYER, cpu.beginStep(moved), shapes[0]),
    gpu.attention(qkv[1], caches[1], LAYER, gpu.beginStep(moved), shapes[1]),
  ];
  const err = relativeError(gpu.toHost(out[1]), cpu.toHost(out[0]));
  assert.ok(err < kvCodeTolerance(dtype), `${name}: relative error ${err}`);
}

for (const dtype of ['fp8_e4m3', 'int8'] as const) {
  for (const kernel of MLA_DECODE_KERNELS) {
    test(`${dtype}: MLA rows quantized by the cache write and read by the absorbed attention kernels (${kernel} decode)`, () => {
      const chosen = gpu.mlaDecode;
      gpu.mlaDecode = kernel;
      try {
        for (const shape of [{ heads: 4, latent: 32, rope: 8, nope: 16 }, { heads: 16, latent: 512, rope: 64, nope: 128 }, { heads: 128, latent: 512, rope: 64, nope: 128 }]) {
          const mla: MlaParams = { numHeads: shape.heads, latentDim: shape.latent, ropeDim: shape.rope, nopeDim: shape.nope, scale: (shape.nope + shape.rope) ** -0.5 };
          const first = chunks(rng, 2, 120);
          const steps = [first, next(rng, first, 60)];
          const longest = Math.max(...steps.flat().map((q) => q.cached + q.query));
          const blockSize = 16;
          const numBlocks = 2 * (Math.ceil(longest / blockSize) + 1) + 4;
          const layout: KvCacheLayout = {
            numBlocks,
            blockSize,
            layers: [{ kind: 'attention', numKvHeads: 1, headDim: 64, slidingWindow: null }, { kind: 'mla', latentDim: shape.latent, ropeDim: shape.rope }],
            dtype,
          };
          const caches = [cpu.createKvCache(layout), gpu.createKvCache(layout)] as const;
          const table = ropeTables(longest + 1, shape.rope);
          const rope = [cpu.uploadRopeTable(table), gpu.uploadRopeTable(table)] as const;
          const normHost = bf16Tensor([shape.latent], Float32Array.from({ length: shape.latent }, () => 0.5 + rng()));
          const norm = [cpu.loadWeight(normHost), gpu.loadWeight(normHost)] as const;
          const blocks = new BlockAssignment(rng, numBlocks, 2);
          for (const specs of steps) {
            const batch = buildBatch(specs, blocks, blockSize);
            const pair = (n: number, scale: number) => {
              const host = bf16Tensor([batch.numTokens, n], randomBf16Values(rng, batch.numTokens * n, scale));
              return [cpu.loadWeight(host), gpu.loadWeight(host)] as const;
            };
            const q = pair(shape.heads * (shape.nope + shape.rope), 1);
            const kv = pair(shape.latent + shape.rope, 2);
            const s = [cpu.beginStep(batch), gpu.beginStep(batch)] as const;
            cpu.mlaRopeAndCacheWrite(q[0], kv[0], norm[0], 1e-6, rope[0], caches[0], LAYER, s[0], mla);
            gpu.mlaRopeAndCacheWrite(q[1], kv[1], norm[1], 1e-6, rope[1], caches[1], LAYER, s[1], mla);
            const qLatent = pair(shape.heads * shape.latent, 0.5);
            const out = [cpu.mlaAttention(qLatent[0], q[0], caches[0], LAYER, s[0], mla), gpu.mlaAttention(qLatent[1], q[1], caches[1], LAYER, s[1], mla)];
            const err = relativeError(gpu.toHost(out[1]), cpu.toHost(out[0]));
            assert.ok(err < kvCodeTolerance(dtype), `${dtype} MLA ${JSON.stringify(shape)} (${kernel} decode): relative error ${err}`);
          }
        }
      } finally {
        gpu.mlaDecode = chosen;
      }
    });
  }
}

test("keel-tiny's perplexity with fp8 and int8 KV on CUDA is within 1 % of the CPU backend's with the same cache, int4 within 2 %", async () => {
  const text = 'import os\nimport sys\n\ndef read_lines(path):\n    with open(path) as f:\n        return [line.rstrip() for line in f]\n\n'.repeat(12);
  for (const kvCacheDtype of ['fp8', 'int8', 'int4'] as const) {
    const values: number[] = [];
    for (const backend of ['cpu', 'cuda'] as const) {
      const llm = await LLM.load({ backend, showProgress: false, kvCacheDtype });
      try {
        values.push((await perplexity(llm, llm.encode(text), { contextLength: 256, stride: 128 })).perplexity);
      } finally {
        await llm.close();
      }
    }
    // int4's codes are 16 times coarser than int8's: a key rounded to bf16 before quantizing lands a code apart more often.
    assert.ok(Math.abs(values[1] / values[0] - 1) < (kvCacheDtype === 'int4' ? 0.02 : 0.01), `${kvCacheDtype}: CUDA ${values[1]} vs CPU ${values[0]}`);
  }
});
