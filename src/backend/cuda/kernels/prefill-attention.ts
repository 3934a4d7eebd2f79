import type { CudaDevice } from '../cuda-device.ts';
import type { DevicePtr } from '../driver-api.ts';
import { attentionOptionDefines, kernelWindow, kvCodeKernelArgs, type PagedAttentionArgs, scoreScales, streamingKernelArgs } from './paged-attention-args.ts';

const THREADS = 128;
const TILE_ROWS = 64;

/** Dynamic shared memory of prefill_attention_kernel: a Q tile and two stages of K and V tiles. */
export function prefillSharedBytes(headDim: number): number {
  const padded = Math.ceil(headDim / 16) * 16;
  const keys = headDim <= 128 ? 64 : 32;
  return (TILE_ROWS + 4 * keys) * (padded + 8) * 2;
}

export interface PrefillAttentionArgs extends PagedAttentionArgs {
  /** [numTiles, 2] (sequence, first query row), from planAttention. */
  tiles: DevicePtr;
  numTiles: number;
  /** The step's tree mask (BatchDescription.treeMask) and its words per row; 0 words: every chunk is causal. */
  treeMask: DevicePtr;
  treeMaskWords: number;
}

/** Tiled causal attention for every multi-token chunk of the step (tree-masked where the step has a tree mask). */
export function launchPrefillAttention(device: CudaDevice, a: PrefillAttentionArgs): void {
  if (a.numTiles === 0) return;
  const { numHeads, numKvHeads, headDim } = a.shape;
  const defines = { HEAD_DIM: headDim, ...attentionOptionDefines(a), TREE: a.treeMaskWords > 0 ? 1 : 0 };
  const { qScale, softcapLog2 } = scoreScales(a.shape);
  const kernel = device.kernel('prefill-attention.cu', 'prefill_attention_kernel', 'pppppppppiiiiffpipppiiippffpi', defines);
  device.launch(kernel, [numHeads, a.numTiles], [THREADS], prefillSharedBytes(headDim), [
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
  ]);
}
