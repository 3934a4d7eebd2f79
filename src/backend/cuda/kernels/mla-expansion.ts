import type { MlaParams } from '../../backend.ts';
import type { KvCacheDtype } from '../../../step/kv-cache-layout.ts';
import type { CudaDevice } from '../cuda-device.ts';
import type { DevicePtr } from '../driver-api.ts';
import { kvDtypeDefine } from './kv-quantize.ts';
import { MLA_EXPANSION_BLOCK, type MlaExpansionPlan } from '../mla-expansion-plan.ts';
import type { PagedSequences } from './paged-attention-args.ts';
import { launchPrefillAttention, wgmmaPrefillUnsupported, type PrefillAttentionArgs } from './prefill-attention.ts';

/**
 * MLA's prefill in the expanded form. The absorbed form (mla.cu) scores every (query, key) pair
 * over the latent and rotary part (2 · 512 + 64 multiply-adds a head for DeepSeek's shapes) and
 * sums latent rows; the expanded form projects each key of the chunk's context once to every
 * head's key [W_UK c | k_rope] and value W_UV c (as transformers computes it), then attends with
 * keys of nope + rope (192) and values of valueDim (128): about a third of the multiply-adds a
 * pair, on the wgmma prefill kernel. The projection costs a GEMM per key, which a chunk of many
 * queries amortizes; decodes and short chunks stay absorbed.
 */

/** MLA's form for long chunks (CudaBackendOptions.mlaPrefill). */
export type MlaPrefillForm = 'absorbed' | 'auto' | 'expanded';
export const MLA_PREFILL_FORMS: readonly MlaPrefillForm[] = ['absorbed', 'auto', 'expanded'];

/**
 * Most bytes the scratch may take (latents, keys and values of every chunk's context): 94k keys of
 * DeepSeek-V2-Lite's 16 heads, 12k of V3's 128. It comes out of the memory gpuMemoryUtilization
 * leaves free of the KV cache; a step needing more runs absorbed.
 */
export const MLA_EXPANSION_MAX_BYTES = 1024 * 1024 * 1024;

/** Scratch bytes for `rows` keys: their latents, every head's keys (nope + rope) and values. */
export function mlaExpansionBytes(rows: number, mla: MlaParams, valueDim: number): number {
  return 2 * rows * (mla.latentDim + mla.numHeads * (mla.nopeDim + mla.ropeDim + valueDim));
}

/** Why the expanded form cannot run this layer on this device, or null when it can. */
export function mlaExpansionUnsupported(device: CudaDevice, mla: MlaParams, valueDim: number): string | null {
  if (mla.latentDim % 8 !== 0 || mla.ropeDim % 8 !== 0 || mla.nopeDim % 8 !== 0) return 'latent, rope and nope widths must be multiples of 8';
  return wgmmaPrefillUnsupported(device, { ...mlaAttentionShape(mla), valueDim, dtype: 'auto', treeMaskWords: 0 });
}

function mlaAttentionShape(mla: MlaParams): Pick<PrefillAttentionArgs, 'shape'> {
  const headDim = mla.nopeDim + mla.ropeDim;
  return { shape: { numHeads: mla.numHeads, numKvHeads: mla.numHeads, headDim, scale: mla.scale, slidingWindow: null, softcap: null, sinks: null, streaming: null } };
}

/** `PagedSequences`: the chunks' sequences in the layer's own pool, which the gather reads. */
export interface MlaExpandedPrefillArgs extends PagedSequences {
  /** [numTokens, numHeads * valueDim]: the chunks' rows are written, the others left as they are. */
  out: DevicePtr;
  /** [numTokens, numHeads * (nopeDim + ropeDim)] the queries, rotated (mlaRopeAndCacheWrite). */
  q: DevicePtr;
  /** The layer's pool of rows [latent | rope] and, for int8, its row scales. */
  pool: DevicePtr;
  dtype: KvCacheDtype;
  rowScales: DevicePtr;
  /** [numHeads, latentDim, nopeDim] W_UKᵀ and [numHeads, valueDim, latentDim] W_UV (layers/mla-attention.ts). */
  keyAbsorption: DevicePtr;
  valueAbsorption: DevicePtr;
  valueDim: number;
  mla: MlaParams;
  plan: MlaExpansionPlan;
  /** The plan's blocks and tables on the device. */
  scratchBlocks: DevicePtr;
  scratchTables: DevicePtr;
  /** mlaExpansionBytes(plan.rows, …) of scratch. */
  scratch: DevicePtr;
  /** The expanded chunks' 128-row tiles (MlaExpansionPlan.wideTiles). */
  wideTiles: DevicePtr;
  numWideTiles: number;
}

/** Gathers the chunks' contexts, projects them to every head's keys and values, and attends. */
export function launchMlaExpandedPrefill(device: CudaDevice, a: MlaExpandedPrefillArgs): void {
  const { numHeads, latentDim, nopeDim, ropeDim } = a.mla;
  const rows = a.plan.rows;
  const headDim = nopeDim + ropeDim;
  const latents = a.scratch;
  const keys = latents + 2 * rows * latentDim;
  const values = keys + 2 * rows * numHeads * headDim;
  const gather = device.kernel('mla-expansion.cu', 'mla_expand_gather_kernel', 'ppppfpippiiiiii', { KV_DTYPE: kvDtypeDefine(a.dtype) });
  device.launch(gather, [rows / MLA_EXPANSION_BLOCK], [256], 0, [
    latents, keys, a.pool, a.rowScales, 1, a.scratchBlocks, MLA_EXPANSION_BLOCK, a.seqLens, a.blockTables, a.maxBlocksPerSeq, a.blockSize, numHeads, nopeDim, latentDim, ropeDim,
  ]);
  // The latents are every head's input (head stride 0); keys' nope parts land in their rows of nope + rope.
  const shared = { ptr: latents, rowStride: latentDim, headStride: 0 };
  device.cublas.headwiseBf16({ ptr: keys, rowStride: numHeads * headDim, headStride: headDim }, shared, { ptr: a.keyAbsorption, layout: 'columns' }, numHeads, rows, nopeDim, latentDim);
  device.cublas.headwiseBf16({ ptr: values, rowStride: numHeads * a.valueDim, headStride: a.valueDim }, shared, { ptr: a.valueAbsorption, layout: 'rows' }, numHeads, rows, a.valueDim, latentDim);
  launchPrefillAttention(device, {
    ...mlaAttentionShape(a.mla),
    out: a.out,
    qkv: a.q,
    queryRowStride: numHeads * headDim,
    kPool: keys,
    vPool: values,
    valueDim: a.valueDim,
    dtype: 'auto',
    kScales: 0,
    vScales: 0,
    queryStartLoc: a.queryStartLoc,
    positions: a.positions,
    seqLens: a.seqLens,
    blockTables: a.scratchTables,
    maxBlocksPerSeq: a.plan.maxBlocks,
    blockSize: MLA_EXPANSION_BLOCK,
    sinks: 0,
    rotary: null,
    // The legacy kernel's tiles are never read: the wgmma path is required.
    tiles: a.wideTiles,
    numTiles: a.numWideTiles,
    wideTiles: a.wideTiles,
    numWideTiles: a.numWideTiles,
    treeMask: 0,
    treeMaskWords: 0,
    path: 'wgmma',
  });
}
