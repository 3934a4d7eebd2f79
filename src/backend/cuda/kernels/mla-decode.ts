import type { MlaParams } from '../../backend.ts';
import { chooseMlaPartitions, mlaMinKeysPerPartition } from '../attention-plan.ts';
import type { CudaDevice } from '../cuda-device.ts';
import type { DevicePtr } from '../driver-api.ts';
import type { KvCacheDtype } from '../../../step/kv-cache-layout.ts';
import { kvDtypeDefine } from './kv-quantize.ts';
import type { PagedSequences } from './paged-attention-args.ts';

/**
 * Which kernel runs MLA decode: 'flash' (mla-decode.cu: heads as the MMA rows, split-KV with a
 * combine) where it applies, or 'tiled' (mla.cu's kernel shared with prefill).
 */
export type MlaDecodeKernel = 'flash' | 'tiled';
export const MLA_DECODE_KERNELS: readonly MlaDecodeKernel[] = ['flash', 'tiled'];

/** Keys per KV tile of mla_decode_kernel (BN). */
export const MLA_DECODE_TILE_KEYS = 64;
const THREADS = 256;
const WARPS = THREADS / 32;

/** 16-head row tiles per CTA: as few as hold the heads, 3 rounded up to 4 (the kernel takes 1, 2 or 4), at most 4. */
export function mlaDecodeRowTiles(numHeads: number): 1 | 2 | 4 {
  const tiles = Math.ceil(numHeads / 16);
  return tiles <= 1 ? 1 : tiles === 2 ? 2 : 4;
}

/** Rows of `chunks` 16-byte chunks are swizzled when a multiple of 8 chunks, else padded by one (SmemRows). */
function rowBytes(chunks: number): number {
  return (chunks % 8 === 0 ? chunks : chunks + 1) * 16;
}

/** Dynamic shared memory of mla_decode_kernel: the query tile, two KV tiles, the probabilities, the row reductions. */
export function mlaDecodeSharedBytes(latentDim: number, ropeDim: number, rowTiles: number): number {
  const rows = 16 * rowTiles;
  const rowChunks = (latentDim + ropeDim) / 8;
  return (rows + 2 * MLA_DECODE_TILE_KEYS) * rowBytes(rowChunks) + rows * rowBytes(MLA_DECODE_TILE_KEYS / 8) + (WARPS / rowTiles) * rows * 4;
}

/**
 * Whether mla_decode_kernel takes this shape on this device: a latent a multiple of 128 (a whole
 * number of 16-column slices per warp), a rope part a multiple of 16, and its shared memory within
 * the device's limit (DeepSeek's 512 + 64 needs up to 225 KB: Hopper, not the A100's 163 KB).
 */
export function mlaDecodeApplies(device: CudaDevice, mla: MlaParams): boolean {
  if (mla.latentDim % 128 !== 0 || mla.ropeDim % 16 !== 0) return false;
  return mlaDecodeSharedBytes(mla.latentDim, mla.ropeDim, mlaDecodeRowTiles(mla.numHeads)) <= device.info.maxSharedMemoryPerBlockOptin;
}

export interface MlaDecodeArgs extends PagedSequences {
  /** [numTokens, numHeads * latentDim] bf16. */
  out: DevicePtr;
  /** [numTokens, numHeads * latentDim] bf16. */
  qLatent: DevicePtr;
  /** [numTokens, numHeads * (nopeDim + ropeDim)] bf16, rotary parts already rotated. */
  q: DevicePtr;
  /** The layer's pool of rows [slots, latentDim + ropeDim]: bf16, or 8-bit codes (`dtype`, fp8 with scale 1). */
  pool: DevicePtr;
  dtype: KvCacheDtype;
  /** int8: the pool's float32 scale per row; 0 otherwise. */
  rowScales: DevicePtr;
  mla: MlaParams;
  /** [numDecode] single-token sequences, from planAttention. */
  decodeSeqs: DevicePtr;
  numDecode: number;
  /** Keys a decode may see at most: the split depends only on this (and the step's shape: graph replay). */
  maxDecodeSeqLen: number;
  /** Allocates the split-KV workspace (called only when the context is split). */
  workspace: (bytes: number) => DevicePtr;
}

/**
 * Absorbed MLA over the decode sequences with mla_decode_kernel: a CTA per (16 · rowTiles heads,
 * sequence, partition), the launch's partitions sized for the longest context the tables hold so that
 * one wave fills the multiprocessors, each decode using those its own keys need (decode-split.cuh,
 * partitions of about mlaMinKeysPerPartition keys); then mla_decode_combine_kernel merges a decode's
 * partitions where it used several. Callers check mlaDecodeApplies first.
 */
export function launchMlaDecode(device: CudaDevice, a: MlaDecodeArgs): void {
  const { numHeads, latentDim, ropeDim, nopeDim, scale } = a.mla;
  const rowTiles = mlaDecodeRowTiles(numHeads);
  const defines = { LATENT: latentDim, ROPE: ropeDim, MT: rowTiles, KV_DTYPE: kvDtypeDefine(a.dtype) };
  const headsPerCta = 16 * rowTiles;
  const headBlocks = Math.ceil(numHeads / headsPerCta);
  const minKeys = mlaMinKeysPerPartition(headsPerCta);
  const { numPartitions } = chooseMlaPartitions(a.numDecode * headBlocks, headsPerCta, a.maxDecodeSeqLen, MLA_DECODE_TILE_KEYS, device.info.multiprocessorCount);
  let partAcc = 0;
  let partMl = 0;
  if (numPartitions > 1) {
    const rows = a.numDecode * numHeads * numPartitions;
    partAcc = a.workspace(rows * (latentDim + 2) * 4);
    partMl = partAcc + rows * latentDim * 4;
  }
  const kernel = device.kernel('mla-decode.cu', 'mla_decode_kernel', 'pppppppppppiiiiifiipf', defines);
  device.launch(kernel, [headBlocks, a.numDecode, numPartitions], [THREADS], mlaDecodeSharedBytes(latentDim, ropeDim, rowTiles), [
    a.out, partAcc, partMl, a.qLatent, a.q, a.pool, a.decodeSeqs, a.queryStartLoc, a.positions, a.seqLens, a.blockTables,
    a.maxBlocksPerSeq, a.blockSize, numHeads, nopeDim + ropeDim, nopeDim, scale * Math.LOG2E, minKeys, numPartitions, a.rowScales, 1,
  ]);
  if (numPartitions > 1) {
    const combine = device.kernel('mla-decode.cu', 'mla_decode_combine_kernel', 'pppppppiii', defines);
    device.launch(combine, [numHeads, a.numDecode], [128], numPartitions * 4, [
      a.out, partAcc, partMl, a.decodeSeqs, a.queryStartLoc, a.positions, a.seqLens, numHeads, numPartitions, minKeys,
    ]);
  }
}
