import type { MlaParams } from '../../backend.ts';
import { chooseMlaPartitions, PREFILL_TILE_ROWS } from '../attention-plan.ts';
import type { CudaDevice } from '../cuda-device.ts';
import type { DevicePtr } from '../driver-api.ts';
import { kvDtypeDefine } from './kv-quantize.ts';
import { launchMlaDecode, mlaDecodeApplies, type MlaDecodeArgs, type MlaDecodeKernel } from './mla-decode.ts';

/** Warps of mla_attention_kernel for a latent width: its warps_for(). */
export function mlaWarps(latentDim: number): number {
  return latentDim % 128 === 0 ? 8 : latentDim % 64 === 0 ? 4 : 2;
}

/** Keys per KV tile: 8 per warp. */
export function mlaTileKeys(latentDim: number): number {
  return 8 * mlaWarps(latentDim);
}

/** Shared rows of `chunks` 16-byte chunks are swizzled when a multiple of 8 chunks, else padded by one (SmemRows). */
function rowBytes(chunks: number): number {
  return (chunks % 8 === 0 ? chunks : chunks + 1) * 16;
}

/**
 * Dynamic shared memory of mla_attention_kernel: the query tile (16 · rowTiles rows), `stages` KV
 * tiles, the probabilities and the per-warp row maxima.
 */
export function mlaSharedBytes(latentDim: number, ropeDim: number, rowTiles: number, stages: number): number {
  const rows = 16 * rowTiles;
  const keys = mlaTileKeys(latentDim);
  const rowChunks = Math.ceil((latentDim + ropeDim) / 16) * 2;
  return (rows + stages * keys) * rowBytes(rowChunks) + rows * rowBytes(keys / 8) + mlaWarps(latentDim) * rows * 4;
}

/** The decode kernel's arguments, and the prefill tiles. */
export interface MlaAttentionArgs extends MlaDecodeArgs {
  /** [numTiles, 2] (sequence, first query row) of 64-token prefill tiles, from planAttention. */
  prefillTiles: DevicePtr;
  numPrefillTiles: number;
  /** The decode kernel: 'flash' (mla-decode.cu) where it applies, else this file's tiled kernel. */
  decodeKernel: MlaDecodeKernel;
}

/** The largest 16-row tile count up to `most` (and the KV stages) whose shared memory fits the device. */
function fitTiles(device: CudaDevice, mla: MlaParams, most: number): { rowTiles: number; stages: number } {
  const limit = device.info.maxSharedMemoryPerBlockOptin;
  for (const stages of [2, 1]) {
    for (let rowTiles = most; rowTiles >= 1; rowTiles--) {
      if (mlaSharedBytes(mla.latentDim, mla.ropeDim, rowTiles, stages) <= limit) return { rowTiles, stages };
    }
  }
  throw new Error(`MLA attention with latent ${mla.latentDim} + rope ${mla.ropeDim} needs more shared memory than ${device.info.name} allows per block`);
}

/**
 * Absorbed MLA for every token of the step: one launch over the decode sequences (their heads in
 * row tiles, the context split when that fills the GPU better; mla-decode.cu's kernel when asked for
 * and it applies), one over the prefill tiles.
 */
export function launchMlaAttention(device: CudaDevice, a: MlaAttentionArgs): void {
  const { numHeads, latentDim, ropeDim, nopeDim, scale } = a.mla;
  const threads = 32 * mlaWarps(latentDim);
  const defines = (fit: { rowTiles: number; stages: number }) => ({ LATENT: latentDim, ROPE: ropeDim, MT: fit.rowTiles, STAGES: fit.stages, KV_DTYPE: kvDtypeDefine(a.dtype) });
  const shared = (fit: { rowTiles: number; stages: number }) => mlaSharedBytes(latentDim, ropeDim, fit.rowTiles, fit.stages);
  const tail = [a.queryStartLoc, a.positions, a.seqLens, a.blockTables, a.maxBlocksPerSeq, a.blockSize, numHeads, nopeDim + ropeDim, nopeDim, scale * Math.LOG2E];

  if (a.numDecode > 0 && a.decodeKernel === 'flash' && mlaDecodeApplies(device, a.mla)) {
    launchMlaDecode(device, a);
  } else if (a.numDecode > 0) {
    // A decode's rows are its heads: as few 16-row tiles as hold them, at most four per CTA.
    const fit = fitTiles(device, a.mla, Math.min(4, Math.ceil(numHeads / 16)));
    const kernel = device.kernel('mla.cu', 'mla_attention_kernel', 'pppppppiippppiiiiifiipf', defines(fit));
    const headBlocks = Math.ceil(numHeads / (16 * fit.rowTiles));
    const { numPartitions, partitionSize } = chooseMlaPartitions(a.numDecode * headBlocks, 16 * fit.rowTiles, a.maxDecodeSeqLen, mlaTileKeys(latentDim), device.info.multiprocessorCount);
    let partAcc = 0;
    let partMl = 0;
    if (numPartitions > 1) {
      const rows = a.numDecode * numHeads * numPartitions;
      partAcc = a.workspace(rows * (latentDim + 2) * 4);
      partMl = partAcc + rows * latentDim * 4;
    }
    device.launch(kernel, [headBlocks, a.numDecode, numPartitions], [threads], shared(fit), [
      a.out, partAcc, partMl, a.qLatent, a.q, a.pool, a.decodeSeqs, 1, 1, ...tail, partitionSize, numPartitions, a.rowScales, 1,
    ]);
    if (numPartitions > 1) {
      const reduce = device.kernel('mla.cu', 'mla_reduce_kernel', 'pppppii', defines(fit));
      device.launch(reduce, [numHeads, a.numDecode], [Math.min(256, Math.ceil(latentDim / 32) * 32)], 0, [a.out, partAcc, partMl, a.decodeSeqs, a.queryStartLoc, numHeads, numPartitions]);
    }
  }

  if (a.numPrefillTiles > 0) {
    const fit = fitTiles(device, a.mla, 4);
    const kernel = device.kernel('mla.cu', 'mla_attention_kernel', 'pppppppiippppiiiiifiipf', defines(fit));
    const rowBlocks = Math.ceil((PREFILL_TILE_ROWS * numHeads) / (16 * fit.rowTiles));
    // Unsplit: one partition spanning any context.
    device.launch(kernel, [rowBlocks, a.numPrefillTiles, 1], [threads], shared(fit), [
      a.out, 0, 0, a.qLatent, a.q, a.pool, a.prefillTiles, 2, PREFILL_TILE_ROWS, ...tail, 2 ** 30, 1, a.rowScales, 1,
    ]);
  }
}
