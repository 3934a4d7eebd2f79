import type { CudaDevice } from '../cuda-device.ts';
import type { DevicePtr } from '../driver-api.ts';
import type { KvCacheDtype } from '../../../step/kv-cache-layout.ts';
import { KeelError } from '../../../errors.ts';
import { PREFILL_TILE_ROWS, WIDE_PREFILL_TILE_ROWS } from '../attention-plan.ts';
import { attentionOptionDefines, kernelWindow, kvCodeKernelArgs, type PagedAttentionArgs, positionKernelArgs, scoreScales, streamingKernelArgs } from './paged-attention-args.ts';

const THREADS = 128;

/**
 * Which kernel runs prefill attention: `legacy`, prefill-attention.cu (mma.sync, every GPU and
 * option); `auto`, prefill-attention-wgmma.cu (wgmma, sm_90a) wherever it covers the layer, legacy
 * elsewhere; `wgmma`, the Hopper kernel or an error naming why it cannot run (tests, benchmarks).
 */
export type PrefillAttentionPath = 'legacy' | 'auto' | 'wgmma';
export const PREFILL_ATTENTION_PATHS: readonly PrefillAttentionPath[] = ['legacy', 'auto', 'wgmma'];

/**
 * Warps that share one row group of prefill_attention_kernel, each taking a slice of the head (its
 * DSPLIT): 2 for head dims over 256, whose CTAs then take half a planned tile each.
 */
export function prefillHeadSplit(headDim: number): number {
  return headDim <= 256 ? 1 : 2;
}

/** Dynamic shared memory of prefill_attention_kernel: a Q tile, two stages of K and V tiles, a split head's swapped scores and the row scales of int8 (int4's pairs). */
export function prefillSharedBytes(headDim: number, dtype: KvCacheDtype): number {
  const split = prefillHeadSplit(headDim);
  const padded = Math.ceil(headDim / (16 * split)) * 16 * split;
  const keys = headDim <= 128 ? 64 : headDim <= 256 ? 32 : 16;
  const swapped = split === 1 ? 0 : THREADS * (keys / 2) * 4;
  const rowScales = 2 * 2 * keys * 4 * (dtype === 'int4' ? 2 : 1); // int8's scales or int4's (scale, minimum) pairs, per stage, K and V
  return (PREFILL_TILE_ROWS / split + 4 * keys) * (padded + 8) * 2 + swapped + rowScales;
}

// prefill-attention-wgmma.cu: 128 query rows, BN keys per tile, two stages; a loader warpgroup and two consumers.
const WGMMA_THREADS = 384;
const WGMMA_STAGES = 2;

/**
 * Whether prefill_attention_wgmma_kernel takes a head dim: multiples of 16 from 64 to 256 (the kernel
 * takes 16 and up, but below 64 the padding to a 64-column panel would be most of its work).
 */
function wgmmaHeadDim(headDim: number): boolean {
  return headDim % 16 === 0 && headDim >= 64 && headDim <= 256;
}

/** A head's row width in the kernel's shared memory (its DP): the head dim padded to 64, 128 or 256. */
function wgmmaPaddedHeadDim(headDim: number): number {
  return headDim <= 64 ? 64 : headDim <= 128 ? 128 : 256;
}

/** Keys per K or V tile of prefill_attention_wgmma_kernel (its BN). */
function wgmmaTileKeys(headDim: number): number {
  return wgmmaPaddedHeadDim(headDim) <= 128 ? 128 : 64;
}

/** Dynamic shared memory of prefill_attention_wgmma_kernel: alignment slack, Q, K and V stages, mbarriers. */
export function prefillWgmmaSharedBytes(headDim: number, valueDim = headDim): number {
  const keys = wgmmaTileKeys(headDim);
  const width = wgmmaPaddedHeadDim(headDim);
  const valueWidth = wgmmaPaddedHeadDim(valueDim);
  return 1024 + WIDE_PREFILL_TILE_ROWS * width * 2 + WGMMA_STAGES * keys * (width + valueWidth) * 2 + 8 * (1 + 4 * WGMMA_STAGES);
}

export interface PrefillAttentionArgs extends PagedAttentionArgs {
  /** [numTiles, 2] (sequence, first query row), from planAttention. */
  tiles: DevicePtr;
  numTiles: number;
  /** The same chunks in 128-row tiles (planAttention's wideTiles), for the Hopper kernel. */
  wideTiles: DevicePtr;
  numWideTiles: number;
  /** The step's tree mask (BatchDescription.treeMask) and its words per row; 0 words: every chunk is causal. */
  treeMask: DevicePtr;
  treeMaskWords: number;
  path: PrefillAttentionPath;
  /**
   * A value head narrower than the key's (MLA's expanded prefill, mla-expansion.ts; the wgmma kernel
   * only): out is then [numTokens, numHeads * valueDim] and the value pool's rows that wide. Absent: headDim.
   */
  valueDim?: number;
  /** Elements from one token's queries to the next in `qkv`. Absent: the packed qkv's (numHeads + 2 * numKvHeads) * headDim. */
  queryRowStride?: number;
}

/** Why prefill-attention-wgmma.cu cannot run this layer on this device, or null when it can. */
export function wgmmaPrefillUnsupported(device: CudaDevice, a: Pick<PrefillAttentionArgs, 'shape' | 'dtype' | 'treeMaskWords' | 'valueDim'>): string | null {
  if (device.info.arch !== 'sm_90a') return `it needs a Hopper GPU (sm_90a); this one compiles for ${device.info.arch}`;
  if (!wgmmaHeadDim(a.shape.headDim)) return `head dim ${a.shape.headDim} is not a multiple of 16 from 64 to 256`;
  if (a.shape.streaming !== null) return 'StreamingLLM rotates queries inside attention';
  if (a.treeMaskWords > 0) return 'the step verifies a speculative tree';
  const valueDim = a.valueDim ?? a.shape.headDim;
  if (valueDim !== a.shape.headDim && (valueDim % 16 !== 0 || wgmmaPaddedHeadDim(valueDim) > wgmmaPaddedHeadDim(a.shape.headDim) || a.dtype !== 'auto')) {
    return `a value head of ${valueDim} beside keys of ${a.shape.headDim} over a ${a.dtype} cache (it takes a bf16 value head, a multiple of 16, no wider than the key's padded width)`;
  }
  return null;
}

/** Tiled causal attention for every multi-token chunk of the step (tree-masked where the step has a tree mask). */
export function launchPrefillAttention(device: CudaDevice, a: PrefillAttentionArgs): void {
  if (a.numTiles === 0) return;
  if (a.path !== 'legacy') {
    const unsupported = wgmmaPrefillUnsupported(device, a);
    if (unsupported === null) return launchWgmma(device, a);
    if (a.path === 'wgmma') throw new KeelError('invalid_argument', `prefill attention: the wgmma kernel cannot run this layer: ${unsupported}`);
  }
  if ((a.valueDim ?? a.shape.headDim) !== a.shape.headDim || a.queryRowStride !== undefined) {
    throw new KeelError('invalid_argument', 'prefill attention: only the wgmma kernel takes a narrower value head or a query row stride');
  }
  const { numHeads, numKvHeads, headDim } = a.shape;
  const defines = { HEAD_DIM: headDim, ...attentionOptionDefines(a), TREE: a.treeMaskWords > 0 ? 1 : 0 };
  const { qScale, softcapLog2 } = scoreScales(a.shape);
  const kernel = device.kernel('prefill-attention.cu', 'prefill_attention_kernel', 'pppppppppiiiiffpipppiiippffpiiffi', defines);
  device.launch(kernel, [numHeads, a.numTiles * prefillHeadSplit(headDim)], [THREADS], prefillSharedBytes(headDim, a.dtype), [
    a.out,
    a.qkv,
    a.kPool,
    a.vPool,
    a.tiles,
    a.queryStartLoc,
    a.positions,
    a.seqLens,
    a.blockTables,
    a.maxBlocksPerSeq,
    a.blockSize,
    numHeads,
    numKvHeads,
    qScale,
    softcapLog2,
    a.sinks,
    kernelWindow(a.shape),
    ...streamingKernelArgs(a),
    ...kvCodeKernelArgs(a),
    a.treeMask,
    a.treeMaskWords,
    ...positionKernelArgs(a.shape),
  ]);
}

/**
 * Whether the wgmma kernel's whole K and V tiles come by TMA, a box a cache block: over a bf16 cache
 * whose blocks tile a key tile in whole 8-row swizzle atoms, with a head of whole 64-column panels
 * (no padding), where the device has tensor maps.
 */
export function wgmmaTilesByTma(hasTensorMaps: boolean, dtype: KvCacheDtype, blockSize: number, headDim: number): boolean {
  return hasTensorMaps && dtype === 'auto' && blockSize % 8 === 0 && wgmmaPaddedHeadDim(headDim) === headDim && wgmmaTileKeys(headDim) % blockSize === 0;
}

function launchWgmma(device: CudaDevice, a: PrefillAttentionArgs): void {
  const { numHeads, numKvHeads, headDim } = a.shape;
  const valueDim = a.valueDim ?? headDim;
  const { SOFTCAP, SINKS, KV_DTYPE } = attentionOptionDefines(a);
  const { qScale, softcapLog2 } = scoreScales(a.shape);
  const maps = device.tensorMaps;
  const tma = valueDim === headDim && wgmmaTilesByTma(maps.encodes, a.dtype, a.blockSize, headDim);
  const kMap = tma ? maps.kvPool(a.kPool, numKvHeads, headDim, a.blockSize) : maps.zero();
  const vMap = tma ? maps.kvPool(a.vPool, numKvHeads, headDim, a.blockSize) : maps.zero();
  const defines = { HEAD_DIM: headDim, SOFTCAP, SINKS, KV_DTYPE, ...(valueDim === headDim ? {} : { VALUE_DIM: valueDim }) };
  const kernel = device.kernel('prefill-attention-wgmma.cu', 'prefill_attention_wgmma_kernel', 'ppipppppppiiiiffpippffiffiitt', defines);
  device.launch(kernel, [numHeads, a.numWideTiles], [WGMMA_THREADS], prefillWgmmaSharedBytes(headDim, valueDim), [
    a.out,
    a.qkv,
    a.queryRowStride ?? (numHeads + 2 * numKvHeads) * headDim,
    a.kPool,
    a.vPool,
    a.wideTiles,
    a.queryStartLoc,
    a.positions,
    a.seqLens,
    a.blockTables,
    a.maxBlocksPerSeq,
    a.blockSize,
    numHeads,
    numKvHeads,
    qScale,
    softcapLog2,
    a.sinks,
    kernelWindow(a.shape),
    ...kvCodeKernelArgs(a),
    ...positionKernelArgs(a.shape),
    tma ? 1 : 0,
    kMap,
    vMap,
  ]);
}
