// The attention kernels timed on the GPU (what `keel bench attention` reports), with CUDA events
// over CUDA-graph replays so host launch cost stays out: decode attention as KV bytes read per
// second at 1k / 8k / 32k context (a bf16 cache with each decode kernel), prefill attention as causal TFLOP/s on the shapes the PyTorch
// SDPA peer runs (tools/peers/hf_peers.py --only sdpa), and the device's ceilings measured alike.
// MLA (absorbed, over the latent cache) with DeepSeek-V2-Lite's and DeepSeek-V3's head counts:
// decode as cached rows read per second with each decode kernel (flash and tiled, in one run),
// prefill as absorbed TFLOP/s.
import type { AttentionParams, MlaParams, MlaUpProjections } from '../backend/backend.ts';
import { CudaBackend } from '../backend/cuda/cuda-backend.ts';
import { CudaTensor, type CudaKvCache } from '../backend/cuda/cuda-tensor.ts';
import { MLA_DECODE_KERNELS, type MlaDecodeKernel } from '../backend/cuda/kernels/mla-decode.ts';
import { mlaExpansionUnsupported } from '../backend/cuda/kernels/mla-expansion.ts';
import type { DecodeAttentionKernel } from '../backend/cuda/kernels/decode-attention.ts';
import { ATTENTION_SECTIONS, type AttentionSection } from './attention-sections.ts';
import { fillRandomBf16, medianGraphMs } from './graph-timing.ts';
import { kvValueBytes, type KvCacheDtype } from '../step/kv-cache-layout.ts';
import { BlockAssignment, bf16Tensor, buildBatch, randomBf16Values, ropeTables, seededRng, type SeqSpec } from './synthetic-batch.ts';

/** Prefill: batch 1 at these lengths with Llama-3.1-8B's heads, as the SDPA peer runs them. */
export const PREFILL_SEQ_LENS = [512, 2048, 8192];
export const DECODE_CONTEXTS = [1024, 8192, 32768];
export const DECODE_BATCHES = [1, 16];
const LLAMA_8B: AttentionParams = { numHeads: 32, numKvHeads: 8, headDim: 128, scale: 128 ** -0.5, slidingWindow: null, softcap: null, sinks: null, streaming: null };
/**
 * Offline throughput's decode shape on the small model (Qwen3-0.6B's 16 query and 8 kv heads,
 * 256 sequences at 640 tokens, midway through 512 in / 256 out), with each KV cache dtype.
 */
const QWEN3_06B: AttentionParams = { ...LLAMA_8B, numHeads: 16 };
/** Prefill at a head dim the wgmma kernel pads in shared memory: Phi-3-mini's 32 heads of 96 (as 128), at 2k and 8k tokens. */
const PHI3_MINI: AttentionParams = { ...LLAMA_8B, numKvHeads: 32, headDim: 96, scale: 96 ** -0.5 };
const PADDED_PREFILL_SEQ_LENS = [2048, 8192];
/**
 * Batch-1 decode at a short context with Qwen3-30B-A3B's heads (32 query, 4 kv): a few kilobytes
 * of cache a head, where the launch and the kernel's fixed steps are the whole cost.
 */
const SHORT_DECODE = { shape: { ...LLAMA_8B, numKvHeads: 4 } as AttentionParams, contextLen: 256 };
/** A bf16 cache's decodes are timed on each kernel (the `auto` choice between them follows these figures). */
const BF16_KERNELS = ['tensor-cores', 'cuda-cores'] as const;
const BATCHED_DECODE = { batch: 256, contextLen: 640, kvDtypes: ['auto', 'fp8_e4m3', 'int8', 'int4'] as const };
/** Long-context decode with quantized caches on Llama-3.1-8B's heads (bf16 is DECODE_CONTEXTS' row at 32k, batch 16). */
const LONG_DECODE = { batch: 16, contextLen: 32768, kvDtypes: ['fp8_e4m3', 'int8', 'int4'] as const };
const BLOCK_SIZE = 16;
/** MLA's latent 512 + rope 64 and nope 128, with DeepSeek-V2-Lite's 16 and DeepSeek-V3's 128 heads. */
export const MLA_HEADS = [16, 128];
export const MLA_DECODE_CONTEXTS = [4096, 32768, 131072];
export const MLA_PREFILL_SEQ_LENS = [2048, 8192];
const MLA_VALUE_DIM = 128;
const mlaShape = (numHeads: number): MlaParams => ({ numHeads, latentDim: 512, ropeDim: 64, nopeDim: 128, scale: 192 ** -0.5 });

export interface PrefillFigure {
  /** The kernel timed: prefill-attention.cu (legacy) or prefill-attention-wgmma.cu (Hopper). */
  kernel: 'legacy' | 'wgmma';
  batch: number;
  seq_len: number;
  num_heads: number;
  num_kv_heads: number;
  head_dim: number;
  causal: boolean;
  ms: number;
  tflops: number;
}

export interface DecodeFigure {
  /** How the cache stores K and V (KvCacheLayout.dtype). */
  kv_dtype: KvCacheDtype;
  /** The decode kernel asked for (CudaBackend.decodeAttention): bf16 is timed on each; quantized caches take `auto` (tensor cores). */
  kernel: DecodeAttentionKernel;
  batch: number;
  context_len: number;
  num_heads: number;
  num_kv_heads: number;
  head_dim: number;
  us: number;
  /** K and V bytes read per second. */
  gb_per_s: number;
}

export interface MlaDecodeFigure {
  /** mla-decode.cu's kernel ('flash'; the tiled one where it does not apply) or mla.cu's ('tiled'). */
  kernel: MlaDecodeKernel;
  batch: number;
  context_len: number;
  num_heads: number;
  latent_dim: number;
  rope_dim: number;
  us: number;
  /** Cached rows (latent + rope) read per second: each once, however many heads read it. */
  gb_per_s: number;
  /** gb_per_s over the measured read bandwidth. */
  read_fraction: number;
}

export interface MlaPrefillFigure {
  /** absorbed (mla.cu) or expanded (kernels/mla-expansion.ts: gather, two GEMMs, the wgmma kernel). */
  form: 'absorbed' | 'expanded';
  seq_len: number;
  num_heads: number;
  latent_dim: number;
  rope_dim: number;
  /** Backend.mlaAttentionHeads, queries to the heads' values: the form's projections included. */
  ms: number;
  /**
   * The form's attention FLOPs over the causal half, per query-key pair: absorbed 2 × heads × (2 ×
   * latent + rope), expanded 2 × heads × (nope + rope + value). Its projections are not counted.
   */
  tflops: number;
}

export interface AttentionBenchmark {
  deviceName: string;
  driverCudaVersion: number;
  ceilings: { read_gb_per_s: number; copy_gb_per_s: number; gemm_bf16_8192_tflops: number };
  prefill: PrefillFigure[];
  decode: DecodeFigure[];
  mlaDecode: MlaDecodeFigure[];
  mlaPrefill: MlaPrefillFigure[];
}

/**
 * Runs the figures of `sections` (all by default; the others come back empty) on GPU `ordinal`,
 * with its own backend released at the end.
 */
export function runAttentionBenchmark(ordinal = 0, sections: ReadonlySet<AttentionSection> = new Set(ATTENTION_SECTIONS)): AttentionBenchmark {
  const bench = new KernelTimer(ordinal);
  const run = <T>(section: AttentionSection, figures: () => T[]): T[] => (sections.has(section) ? figures() : []);
  try {
    const ceilings = bench.ceilings();
    return {
      deviceName: bench.backend.device.info.name,
      driverCudaVersion: bench.backend.device.info.driverCudaVersion,
      ceilings,
      prefill: run('prefill', () =>
        prefillKernels(bench.backend).flatMap((kernel) => [
          ...PREFILL_SEQ_LENS.map((seqLen) => bench.prefill(seqLen, LLAMA_8B, kernel)),
          ...PADDED_PREFILL_SEQ_LENS.map((seqLen) => bench.prefill(seqLen, PHI3_MINI, kernel)),
        ]),
      ),
      decode: run('decode', () => [
        ...BF16_KERNELS.map((kernel) => bench.decode(SHORT_DECODE.contextLen, 1, SHORT_DECODE.shape, 'auto', kernel)),
        ...DECODE_CONTEXTS.flatMap((ctx) => DECODE_BATCHES.flatMap((batch) => BF16_KERNELS.map((kernel) => bench.decode(ctx, batch, LLAMA_8B, 'auto', kernel)))),
        ...BATCHED_DECODE.kvDtypes.flatMap((dtype) =>
          (dtype === 'auto' ? BF16_KERNELS : (['auto'] as const)).map((kernel) => bench.decode(BATCHED_DECODE.contextLen, BATCHED_DECODE.batch, QWEN3_06B, dtype, kernel)),
        ),
        ...LONG_DECODE.kvDtypes.map((dtype) => bench.decode(LONG_DECODE.contextLen, LONG_DECODE.batch, LLAMA_8B, dtype, 'auto')),
      ]),
      mlaDecode: run('mla-decode', () =>
        MLA_HEADS.flatMap((heads) =>
          MLA_DECODE_CONTEXTS.flatMap((ctx) =>
            DECODE_BATCHES.flatMap((batch) => MLA_DECODE_KERNELS.map((kernel) => bench.mlaDecode(ctx, batch, mlaShape(heads), ceilings.read_gb_per_s, kernel))),
          ),
        ),
      ),
      mlaPrefill: run('mla-prefill', () =>
        mlaPrefillForms(bench.backend).flatMap((form) => MLA_HEADS.flatMap((heads) => MLA_PREFILL_SEQ_LENS.map((seqLen) => bench.mlaPrefill(seqLen, mlaShape(heads), form)))),
      ),
    };
  } finally {
    bench.backend.dispose();
  }
}

/** The prefill kernels to time on this device: both on a Hopper GPU, where the wgmma kernel runs. */
function prefillKernels(backend: CudaBackend): PrefillFigure['kernel'][] {
  return backend.device.info.arch === 'sm_90a' ? ['legacy', 'wgmma'] : ['legacy'];
}

/** MLA's prefill forms this device runs: the expanded one needs the wgmma kernel. */
function mlaPrefillForms(backend: CudaBackend): MlaPrefillFigure['form'][] {
  return mlaExpansionUnsupported(backend.device, mlaShape(MLA_HEADS[0]), MLA_VALUE_DIM) === null ? ['absorbed', 'expanded'] : ['absorbed'];
}

class KernelTimer {
  readonly backend: CudaBackend;
  private readonly rng = seededRng(1234);

  constructor(ordinal: number) {
    this.backend = new CudaBackend({ device: ordinal, arenaBytes: 1 << 30 });
  }

  ceilings(): AttentionBenchmark['ceilings'] {
    const device = this.backend.device;
    const bytes = 1 << 30;
    const src = device.alloc(bytes);
    const dst = device.alloc(bytes);
    this.fillRandom(src, bytes);
    const copyMs = this.timeGraph(() => () => device.copyAsync(dst, src, bytes), 5);
    device.free(src);
    device.free(dst);
    return {
      read_gb_per_s: this.backend.measureMemoryBandwidth() / 1e9,
      copy_gb_per_s: (2 * bytes) / (copyMs * 1e-3) / 1e9,
      gemm_bf16_8192_tflops: this.backend.measureMatmulFlops() / 1e12,
    };
  }

  /** Decode attention's K and V bytes read per second; a quantized cache's codes count, its scales do not. */
  decode(contextLen: number, batch: number, shape: AttentionParams, dtype: KvCacheDtype, kernel: DecodeAttentionKernel): DecodeFigure {
    const seqs = Array.from({ length: batch }, () => ({ cached: contextLen - 1, query: 1 }));
    const { cache, batch: described, qkv } = this.setup(shape, seqs, dtype);
    const chosen = this.backend.decodeAttention;
    this.backend.decodeAttention = kernel;
    try {
      const ms = this.timeGraph(() => {
        const step = this.backend.beginStep(described);
        return () => this.backend.attention(qkv, cache, 0, step, shape);
      }, 20);
      const bytes = batch * contextLen * shape.numKvHeads * shape.headDim * 2 * kvValueBytes(dtype, 2);
      return { kv_dtype: dtype, kernel, batch, context_len: contextLen, ...heads(shape), us: ms * 1e3, gb_per_s: bytes / (ms * 1e-3) / 1e9 };
    } finally {
      this.backend.decodeAttention = chosen;
    }
  }

  prefill(seqLen: number, shape: AttentionParams, kernel: PrefillFigure['kernel']): PrefillFigure {
    this.backend.prefillAttention = kernel;
    const { cache, batch, qkv, rope } = this.setup(shape, [{ cached: 0, query: seqLen }]);
    this.backend.ropeAndCacheWrite(qkv, rope, cache, 0, this.backend.beginStep(batch), shape);
    const ms = this.timeGraph(() => {
      const step = this.backend.beginStep(batch);
      return () => this.backend.attention(qkv, cache, 0, step, shape);
    }, 5);
    // QKᵀ and PV, 2 FLOPs per multiply-add each, over the causal half of the square (as the SDPA peer counts).
    const flops = (4 * shape.numHeads * shape.headDim * seqLen * seqLen) / 2;
    return { kernel, batch: 1, seq_len: seqLen, ...heads(shape), causal: true, ms, tflops: flops / (ms * 1e-3) / 1e12 };
  }

  mlaDecode(contextLen: number, batch: number, mla: MlaParams, readGbPerS: number, kernel: MlaDecodeKernel): MlaDecodeFigure {
    const setup = this.mlaSetup(mla, Array.from({ length: batch }, () => ({ cached: contextLen - 1, query: 1 })));
    const chosen = this.backend.mlaDecode;
    this.backend.mlaDecode = kernel;
    try {
      const ms = this.timeGraph(() => this.mlaRun(setup, mla), 20);
      const gbPerS = (batch * contextLen * (mla.latentDim + mla.ropeDim) * 2) / (ms * 1e-3) / 1e9;
      return { kernel, batch, context_len: contextLen, ...mlaDims(mla), us: ms * 1e3, gb_per_s: gbPerS, read_fraction: gbPerS / readGbPerS };
    } finally {
      this.backend.mlaDecode = chosen;
      setup.release();
    }
  }

  mlaPrefill(seqLen: number, mla: MlaParams, form: MlaPrefillFigure['form']): MlaPrefillFigure {
    const chosen = this.backend.mlaPrefill;
    // Set before the setup's step begins: the step carries the expansion's plan.
    this.backend.mlaPrefill = form;
    const setup = this.mlaSetup(mla, [{ cached: 0, query: seqLen }]);
    const up = this.mlaUpProjections(mla);
    try {
      const ms = this.timeGraph(() => this.mlaHeadsRun(setup, mla, up.tensors), 5);
      const pairFlops = 2 * mla.numHeads * (form === 'absorbed' ? 2 * mla.latentDim + mla.ropeDim : mla.nopeDim + mla.ropeDim + MLA_VALUE_DIM);
      return { form, seq_len: seqLen, ...mlaDims(mla), ms, tflops: (pairFlops * seqLen * seqLen) / 2 / (ms * 1e-3) / 1e12 };
    } finally {
      this.backend.mlaPrefill = chosen;
      setup.release();
      up.release();
    }
  }

  /** One MLA layer's pool and queries, all random on the device; `release` frees them. */
  private mlaSetup(mla: MlaParams, seqs: SeqSpec[]) {
    const device = this.backend.device;
    const numBlocks = seqs.reduce((n, s) => n + Math.ceil((s.cached + s.query) / BLOCK_SIZE), 0) + 1;
    const cache = this.backend.createKvCache({ numBlocks, blockSize: BLOCK_SIZE, layers: [{ kind: 'mla', latentDim: mla.latentDim, ropeDim: mla.ropeDim }] }) as CudaKvCache;
    this.fillRandom(cache.base, cache.totalBytes);
    const batch = buildBatch(seqs, new BlockAssignment(this.rng, numBlocks, seqs.length), BLOCK_SIZE);
    const owned: number[] = [];
    const qLatent = this.randomTensor([batch.numTokens, mla.numHeads * mla.latentDim], owned);
    const q = this.randomTensor([batch.numTokens, mla.numHeads * (mla.nopeDim + mla.ropeDim)], owned);
    return { cache, batch, qLatent, q, release: () => owned.forEach((ptr) => device.free(ptr)) };
  }

  /** Random W_UKᵀ and W_UV for the MLA prefill's two forms; `release` frees them. */
  private mlaUpProjections(mla: MlaParams) {
    const owned: number[] = [];
    const tensors = {
      keyAbsorption: this.randomTensor([mla.numHeads, mla.latentDim, mla.nopeDim], owned),
      valueAbsorption: this.randomTensor([mla.numHeads, MLA_VALUE_DIM, mla.latentDim], owned),
    };
    return { tensors, release: () => owned.forEach((ptr) => this.backend.device.free(ptr)) };
  }

  /** A random bf16 tensor on the device, its memory pushed to `owned`. */
  private randomTensor(shape: number[], owned: number[]): CudaTensor {
    const bytes = 2 * shape.reduce((a, b) => a * b, 1);
    const ptr = this.backend.device.alloc(bytes);
    owned.push(ptr);
    this.fillRandom(ptr, bytes);
    return new CudaTensor(shape, ptr, 'bf16');
  }

  /** Begins a step over the MLA setup's batch; returns one layer's MLA attention over it. */
  private mlaRun(setup: ReturnType<KernelTimer['mlaSetup']>, mla: MlaParams): () => void {
    const step = this.backend.beginStep(setup.batch);
    return () => this.backend.mlaAttention(setup.qLatent, setup.q, setup.cache, 0, step, mla);
  }

  /** The same from the queries to the heads' values, in the backend's MLA prefill form. */
  private mlaHeadsRun(setup: ReturnType<KernelTimer['mlaSetup']>, mla: MlaParams, up: MlaUpProjections): () => void {
    const step = this.backend.beginStep(setup.batch);
    return () => this.backend.mlaAttentionHeads(setup.q, setup.cache, 0, step, mla, up);
  }

  private timeGraph(prepare: () => () => void, reps: number): number {
    return medianGraphMs(this.backend, prepare, reps);
  }

  private fillRandom(ptr: number, bytes: number): void {
    fillRandomBf16(this.backend, this.rng, ptr, bytes);
  }

  /** A cache of random bytes (a quantized one's codes and scales alike) holding `seqs`, and their qkv. */
  private setup(shape: AttentionParams, seqs: SeqSpec[], dtype: KvCacheDtype = 'auto') {
    const longest = Math.max(...seqs.map((s) => s.cached + s.query));
    const numBlocks = seqs.reduce((n, s) => n + Math.ceil((s.cached + s.query) / BLOCK_SIZE), 0) + 1;
    const layers = [{ kind: 'attention' as const, numKvHeads: shape.numKvHeads, headDim: shape.headDim, slidingWindow: shape.slidingWindow }];
    const cache = this.backend.createKvCache({ numBlocks, blockSize: BLOCK_SIZE, layers, dtype }) as CudaKvCache;
    this.fillRandom(cache.base, cache.totalBytes);
    const batch = buildBatch(seqs, new BlockAssignment(this.rng, numBlocks, seqs.length), BLOCK_SIZE);
    const width = (shape.numHeads + 2 * shape.numKvHeads) * shape.headDim;
    const qkv = this.backend.loadWeight(bf16Tensor([batch.numTokens, width], randomBf16Values(this.rng, batch.numTokens * width, 1)));
    const rope = this.backend.uploadRopeTable(ropeTables(longest + 1, shape.headDim));
    return { cache, batch, qkv, rope };
  }
}

function mlaDims(mla: MlaParams) {
  return { num_heads: mla.numHeads, latent_dim: mla.latentDim, rope_dim: mla.ropeDim };
}

function heads(shape: AttentionParams) {
  return { num_heads: shape.numHeads, num_kv_heads: shape.numKvHeads, head_dim: shape.headDim };
}
