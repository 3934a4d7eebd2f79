import assert from 'node:assert/strict';
import type { AttentionParams, Backend, HeadNorm, KvCache, QueryTemperature, Tensor } from '../../src/backend/backend.ts';
import { attentionLayout, plainAttention } from './kv-layout.ts';
import { BlockAssignment, bf16Tensor, buildBatch, randomBf16Values, type Rng, type SeqSpec } from '../../src/bench/synthetic-batch.ts';
import { buildRopeTable } from '../../src/layers/rotary.ts';
import { randInt, relativeError } from './gpu-test-support.ts';

// One attention scenario run on a GPU backend and the CPU backend side by side (RoPE + paged KV
// write, then attention), step by step, for the CUDA attention tests.

/** Largest relative error a GPU output may show against the CPU's. */
export const TOLERANCE = 1e-2;
const LAYER = 1; // not layer 0, so per-layer pool offsets are exercised

export interface Scenario {
  name: string;
  headDim: number;
  numKvHeads: number;
  group: number;
  blockSize: number;
  window: number | null;
  /** Per step: each sequence's cached and new tokens. */
  steps: SeqSpec[][];
  /** Steps whose attention output is compared (others only fill the cache). */
  attend: boolean[];
  /** Softmax scale; headDim ** -0.5 by default. */
  scale?: number;
  softcap?: number;
  /** Per-head sink logits (bf16 values), or none. */
  sinks?: Float32Array;
  /** Leading dims of each head that rotate; the whole head by default. */
  rotaryDim?: number;
  /** Rotate each token by a random row of the table rather than its position's (LongRoPE's rows). */
  randomRotaryRows?: boolean;
  /** StreamingLLM's sinks and window: queries stay unrotated until attention rotates them. */
  streaming?: { sinks: number; window: number };
  /** Chunked attention's chunk (Llama 4). */
  attentionChunk?: number;
  /** Query temperature tuning (Llama 4's NoPE layers). */
  queryTemperature?: QueryTemperature;
  /** Random per-head RMSNorm weights for query and key heads (Qwen3), and value heads too with `values`, applied by ropeAndCacheWrite. */
  headNorm?: { values: boolean };
}

/** The same random head norm ([headDim] weights about 1) on the CPU and GPU backends, for ropeAndCacheWrite. */
export function randomHeadNorm(rng: Rng, headDim: number, values: boolean, cpu: Backend, gpu: Backend): [HeadNorm, HeadNorm] {
  const weights = Array.from({ length: values ? 3 : 2 }, () => bf16Tensor([headDim], randomBf16Values(rng, headDim, 0.5).map((w) => 1 + w)));
  const on = (b: Backend): HeadNorm => {
    const [q, k, v] = weights.map((w) => b.loadWeight(w));
    return { q, k, v: v ?? null, eps: 1e-6 };
  };
  return [on(cpu), on(gpu)];
}

/** Runs `s` on `gpu` and `cpu` with random inputs from `rng`, failing on any step whose outputs differ. */
export function runScenario(s: Scenario, gpu: Backend, cpu: Backend, rng: Rng): void {
  const plain: AttentionParams = plainAttention({
    numHeads: s.numKvHeads * s.group,
    numKvHeads: s.numKvHeads,
    headDim: s.headDim,
    scale: s.scale ?? s.headDim ** -0.5,
    slidingWindow: s.window,
  });
  const sinks = s.sinks === undefined ? null : bf16Tensor([plain.numHeads], s.sinks);
  const numSeqs = Math.max(...s.steps.map((step) => step.length));
  const longest = Math.max(...s.steps.flat().map((q) => q.cached + q.query));
  const numBlocks = numSeqs * (Math.ceil(longest / s.blockSize) + 1) + 4;
  const spec = attentionLayout({ numLayers: 2, numBlocks, blockSize: s.blockSize, numKvHeads: s.numKvHeads, headDim: s.headDim });
  const caches: [KvCache, KvCache] = [cpu.createKvCache(spec), gpu.createKvCache(spec)];
  const table = buildRopeTable({ rotaryDim: s.rotaryDim ?? s.headDim, theta: 10000, scaling: { type: 'default' }, maxPositionEmbeddings: longest + 1 }, longest + 1);
  const rope: [Tensor, Tensor] = [cpu.uploadRopeTable(table), gpu.uploadRopeTable(table)];
  const withOptions = (sinkLogits: Tensor | null, table: Tensor): AttentionParams => ({
    ...plain,
    softcap: s.softcap ?? null,
    sinks: sinkLogits,
    streaming: s.streaming === undefined ? null : { ...s.streaming, rope: table },
    ...(s.attentionChunk !== undefined && { attentionChunk: s.attentionChunk }),
    ...(s.queryTemperature !== undefined && { queryTemperature: s.queryTemperature }),
  });
  const shapes = [withOptions(sinks && cpu.loadWeight(sinks), rope[0]), withOptions(sinks && gpu.loadWeight(sinks), rope[1])] as const;
  const blocks = new BlockAssignment(rng, numBlocks, numSeqs);
  const width = (plain.numHeads + 2 * plain.numKvHeads) * s.headDim;
  const norms = s.headNorm === undefined ? [null, null] : randomHeadNorm(rng, s.headDim, s.headNorm.values, cpu, gpu);

  s.steps.forEach((specs, i) => {
    const label = `${s.name} step ${i} [${specs.map((q) => `${q.cached}+${q.query}`).join(' ')}]`;
    const batch = buildBatch(specs, blocks, s.blockSize);
    if (s.randomRotaryRows) batch.rotaryRows = batch.rotaryRows.map(() => randInt(rng, 0, table.maxPositions - 1));
    const qkvHost = bf16Tensor([batch.numTokens, width], randomBf16Values(rng, batch.numTokens * width, 2));
    const qkv: [Tensor, Tensor] = [cpu.loadWeight(qkvHost), gpu.loadWeight(qkvHost)];
    const steps = [cpu.beginStep(batch), gpu.beginStep(batch)] as const;
    cpu.ropeAndCacheWrite(qkv[0], rope[0], caches[0], LAYER, steps[0], shapes[0], norms[0]);
    gpu.ropeAndCacheWrite(qkv[1], rope[1], caches[1], LAYER, steps[1], shapes[1], norms[1]);
    const ropeErr = relativeError(gpu.toHost(qkv[1]), cpu.toHost(qkv[0]));
    assert.ok(ropeErr < TOLERANCE, `${label}: rotated qkv relative error ${ropeErr}`);
    if (!s.attend[i]) return;
    const out = [cpu.attention(qkv[0], caches[0], LAYER, steps[0], shapes[0]), gpu.attention(qkv[1], caches[1], LAYER, steps[1], shapes[1])];
    const err = relativeError(gpu.toHost(out[1]), cpu.toHost(out[0]));
    assert.ok(err < TOLERANCE, `${label}: attention relative error ${err}`);
  });
}

export function randomChunks(r: Rng, numSeqs: number, maxQuery: number): SeqSpec[] {
  return Array.from({ length: numSeqs }, () => ({ cached: 0, query: randInt(r, 1, maxQuery) }));
}

/** The next step after `prev`: each sequence either decodes one token or runs another chunk. */
export function continueSeqs(r: Rng, prev: SeqSpec[], maxQuery: number): SeqSpec[] {
  return prev.map((q) => ({ cached: q.cached + q.query, query: r() < 0.5 ? 1 : randInt(r, 2, maxQuery) }));
}

