import type { CudaDevice } from '../cuda-device.ts';
import type { DevicePtr } from '../driver-api.ts';
import { loraTileCapacity } from '../lora-tiles.ts';

/** Must match WARPS, SHRINK_RANKS and EXPAND_COLS in lora.cu. */
const THREADS = 128;
const SHRINK_RANKS = 64;
const EXPAND_BLOCK_COLS = 4 * 64;
/** The shrink's k steps: a block's share of the input width is a multiple of this (its warps take turns). */
const SHRINK_K_STEP = 128;
/** Shrink blocks to aim for per multiprocessor: enough loads in flight when a decode step has few tiles. */
const SHRINK_BLOCKS_PER_SM = 4;
/** Most parts of the input width: every expand thread reads each part's partial of its v. */
const SHRINK_MAX_SPLITS = 8;
/** Most slices (stacked projections) a LoRA'd linear has: q/k/v. */
export const LORA_MAX_SLICES = 3;

export interface LoraLaunch {
  out: DevicePtr;
  x: DevicePtr;
  /** float32 scratch [splits, numTokens, slices, rp] (loraShrinkSplit). */
  v: DevicePtr;
  a: DevicePtr;
  b: DevicePtr;
  ranks: DevicePtr;
  /** The step's LoRA tiles (lora-tiles.ts) on the device. */
  order: DevicePtr;
  tiles: DevicePtr;
  numTokens: number;
  inDim: number;
  /** Where each slice's output rows end, the last at the linear's output width. */
  sliceEnds: readonly number[];
  /** Rank storage stride: the max rank rounded up to 16. */
  rp: number;
  /** The weights' adapter slots: with the token count, bounds the step's tiles. */
  slots: number;
  split: LoraShrinkSplit;
}

/** How the shrink splits the input width over grid.z: `splits` parts of `kSplit` inputs. */
export interface LoraShrinkSplit {
  splits: number;
  kSplit: number;
}

/**
 * Splits the input width so that a step's shrink has about SHRINK_BLOCKS_PER_SM blocks per
 * multiprocessor (decode steps have a tile or two per adapter); prefill-sized steps have enough
 * tiles and take the whole width per block. A function of the shape alone (CUDA graphs).
 */
export function loraShrinkSplit(numTokens: number, inDim: number, slices: number, rp: number, slots: number, multiprocessors: number): LoraShrinkSplit {
  const blocks = loraTileCapacity(numTokens, slots) * slices * Math.ceil(rp / SHRINK_RANKS);
  const most = Math.max(1, Math.min(SHRINK_MAX_SPLITS, Math.floor(inDim / (2 * SHRINK_K_STEP))));
  const wanted = Math.min(most, Math.max(1, Math.ceil((SHRINK_BLOCKS_PER_SM * multiprocessors) / blocks)));
  const kSplit = SHRINK_K_STEP * Math.ceil(inDim / (SHRINK_K_STEP * wanted));
  return { splits: Math.ceil(inDim / kSplit), kSplit };
}

/**
 * out [numTokens, outDim] += per adapted token its adapter's (x · Aᵀ) · Bᵀ, slice by slice: the
 * shrink then the expand (lora.cu), over the step's tiles; inDim a multiple of 8.
 */
export function launchLora(device: CudaDevice, l: LoraLaunch): void {
  if (l.numTokens === 0) return;
  const slices = l.sliceEnds.length;
  if (slices < 1 || slices > LORA_MAX_SLICES) throw new RangeError(`launchLora: ${slices} slices is outside [1, ${LORA_MAX_SLICES}]`);
  const capacity = loraTileCapacity(l.numTokens, l.slots);
  const shrink = device.kernel('lora.cu', 'lora_shrink_kernel', 'ppppppiiiii');
  device.launch(shrink, [capacity, slices * Math.ceil(l.rp / SHRINK_RANKS), l.split.splits], [THREADS], 0, [
    l.v, l.x, l.a, l.order, l.tiles, l.ranks, l.numTokens, l.inDim, l.rp, slices, l.split.kSplit,
  ]);
  const end = (i: number) => l.sliceEnds[Math.min(i, slices - 1)];
  let chunks = 0;
  for (let s = 0; s < slices; s++) chunks += Math.ceil((l.sliceEnds[s] - (s === 0 ? 0 : l.sliceEnds[s - 1])) / EXPAND_BLOCK_COLS);
  const expand = device.kernel('lora.cu', 'lora_expand_kernel', 'ppppppiiiiiii');
  device.launch(expand, [capacity, chunks], [THREADS], 0, [
    l.out, l.v, l.b, l.order, l.tiles, l.ranks, l.numTokens, end(slices - 1), l.rp, slices, l.split.splits, end(0), end(1),
  ]);
}
