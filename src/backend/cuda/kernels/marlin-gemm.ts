import type { CudaDevice } from '../cuda-device.ts';
import type { CudaQuantizedTensor } from '../cuda-tensor.ts';
import type { DevicePtr } from '../driver-api.ts';
import { formatCode, splitWorkspace } from './quantized-linear.ts';

// marlin-gemm.cu: x [rows, k] · Wᵀ with W in the fragment layout (marlin-layout.cu), 1 row and up.

const THREADS = 256;
const WARPS = THREADS / 32;
const STAGES = 4;
/** Strips of 16 output rows per warp (NS): two share each A fragment load. */
const STRIPS_PER_WARP = 2;
/** Blocks a launch should have per multiprocessor (two of 8 warps each keep its loads in flight). */
const TARGET_BLOCKS_PER_SM = 2;
/** Most batch rows times k splits: the f32 partial sums stay within 4 KiB per output column. */
const MAX_SPLIT_ROWS = 1024;

/** One launch's build and grid. */
export interface MarlinConfig {
  /** 16-row A tiles per block (MT). */
  mTiles: number;
  /** Warps of a block along k (WK); the other 8 / WK go along n. */
  kWarps: number;
  grid: [number, number, number];
  /** Stages (of 64 kWarps columns) each k split covers. */
  splitStages: number;
  sharedBytes: number;
}

/**
 * The build and grid for `rows` batch rows: A tiles of 16, 32 or 64 rows (more rows take more
 * row blocks); the fewest warps along k that still give every multiprocessor two blocks (warps
 * along n share one A tile, warps along k each need their own and add their sums at the end);
 * when even 8 warps along k leave the GPU short of blocks (small n, few rows: the memory-bound
 * case), the stages are split over the grid too, each split at least STAGES stages long.
 */
export function marlinConfig(n: number, k: number, rows: number, multiprocessors: number, format: CudaQuantizedTensor['format'], zeros: boolean): MarlinConfig {
  const mTiles = rows <= 16 ? 1 : rows <= 32 ? 2 : 4;
  const rowBlocks = Math.ceil(rows / (16 * mTiles));
  const strips = n / 16;
  const target = TARGET_BLOCKS_PER_SM * multiprocessors;
  // More warps along k make a larger A tile per stage: at most 8 A tiles of 16 rows.
  const choices = [1, 2, 4, 8].filter((wk) => wk * mTiles <= 8);
  const colBlocks = (wk: number) => Math.ceil(strips / (STRIPS_PER_WARP * (WARPS / wk)));
  const kWarps = choices.find((wk) => colBlocks(wk) * rowBlocks >= target) ?? choices[choices.length - 1];
  const blocks = colBlocks(kWarps) * rowBlocks;
  const stages = Math.ceil(k / (64 * kWarps));
  const wanted = Math.ceil(target / blocks);
  const splits = Math.max(1, Math.min(wanted, Math.floor(stages / STAGES), Math.floor(MAX_SPLIT_ROWS / rows)));
  const splitStages = Math.ceil(stages / splits);
  return {
    mTiles,
    kWarps,
    grid: [colBlocks(kWarps), rowBlocks, Math.ceil(stages / splitStages)],
    splitStages,
    sharedBytes: marlinSharedBytes(mTiles, kWarps, format, zeros),
  };
}

/** marlin-gemm.cu's dynamic shared memory: STAGES stages, or the k warps' partial sums if larger. */
function marlinSharedBytes(mTiles: number, kWarps: number, format: CudaQuantizedTensor['format'], zeros: boolean): number {
  const units = format === 'int4' ? 1 : 2;
  const stage = 16 * mTiles * (64 * kWarps + 8) * 2 + THREADS * STRIPS_PER_WARP * units * 16 + WARPS * STRIPS_PER_WARP * (64 + (zeros ? 16 : 0));
  const accumulators = mTiles * 2 * STRIPS_PER_WARP * 4;
  const reduction = (kWarps - 1) * (WARPS / kWarps) * 32 * accumulators * 4;
  return Math.max(STAGES * stage, reduction);
}

/**
 * out [rows, n] = x [rows, k] · Wᵀ (+ bias) on tensor cores for a weight in the fragment layout
 * (w.layout 'marlin'); x in W's stored column order (act-order activations permuted first).
 * `workspace` gives step memory for split-K partial sums.
 */
export function launchMarlinGemm(device: CudaDevice, out: DevicePtr, x: DevicePtr, w: CudaQuantizedTensor, bias: DevicePtr, rows: number, workspace: (bytes: number) => DevicePtr): void {
  if (w.layout !== 'marlin') throw new Error(`launchMarlinGemm: the [${w.rows}, ${w.cols}] ${w.format} weight is in Keel's row layout, not the fragment layout`);
  const zeros = w.zeros !== 0;
  const c = marlinConfig(w.rows, w.cols, rows, device.info.multiprocessorCount, w.format, zeros);
  const kernel = device.kernel('marlin-gemm.cu', 'marlin_gemm_kernel', 'ppppppppiiiiii', {
    FORMAT: formatCode(w.format), ZEROS: zeros ? 1 : 0, MT: c.mTiles, WK: c.kWarps, NS: STRIPS_PER_WARP,
  });
  const split = splitWorkspace(device, workspace, c.grid[2], rows, w.rows, c.grid[0] * c.grid[1]);
  device.launch(kernel, c.grid, [THREADS], c.sharedBytes, [
    out, split.partial, split.arrival, x, w.codes, w.scales, w.zeros, bias, rows, w.rows, w.cols, w.groups, Math.min(w.groupSize, w.cols), c.splitStages,
  ]);
}
