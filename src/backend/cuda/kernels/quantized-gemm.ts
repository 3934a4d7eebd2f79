import type { CudaDevice } from '../cuda-device.ts';
import type { CudaQuantizedTensor } from '../cuda-tensor.ts';
import type { DevicePtr } from '../driver-api.ts';
import { chunkCols, formatCode, quantizedGemvFits, splitWorkspace } from './quantized-linear.ts';

/**
 * Most batch rows the tensor-core GEMM takes; larger batches (long prefills) dequantize the weight
 * to bf16 once and run cuBLAS, whose tuned GEMM then outweighs the dequantization pass. A first
 * guess, to be set from `keel bench linear` on the H200 (docs/quantization.md).
 */
export const QUANTIZED_GEMM_MAX_ROWS = 128;
const TILE_COLS = 64;
const TILE_K = 64;
const STAGES = 3;
const THREADS = 128;
/** Bytes of a shared-memory row of a bf16 tile: TILE_K values and 8 of padding. */
const SMEM_ROW_BYTES = (TILE_K + 8) * 2;
/** Blocks a launch should have (per multiprocessor) before k is split over the grid. */
const TARGET_BLOCKS_PER_SM = 2;
/** Fewest k tiles one split covers. */
const MIN_SPLIT_TILES = 4;
/**
 * Most batch rows times splits: the f32 partial sums then take at most this many rows of the
 * output (4 bytes each), within the activation memory the KV budget leaves for a step.
 */
const MAX_SPLIT_ROWS = 256;

/** Rows of x per tile: the smallest of 16, 32, 64, 128 holding the batch, 128 past it. */
export function quantizedGemmTileRows(rows: number): number {
  return rows <= 16 ? 16 : rows <= 32 ? 32 : rows <= 64 ? 64 : 128;
}

/** Dynamic shared memory of quantized_gemm_kernel: STAGES stages of A rows, codes and chunk parameters (scale, zero, min), then the decoded B tile. */
export function quantizedGemmSharedBytes(tileRows: number, w: CudaQuantizedTensor): number {
  const chunks = (TILE_COLS * TILE_K) / chunkCols(w);
  const paramBytes = 4 * (w.mins === 0 ? 2 : 3);
  return STAGES * (tileRows * SMEM_ROW_BYTES + chunks * (16 + paramBytes)) + TILE_COLS * SMEM_ROW_BYTES;
}

/** Splits of k for a launch of `tiles` output tiles over `kTiles` k tiles, for a batch of `rows`. */
export function quantizedGemmSplits(tiles: number, kTiles: number, multiprocessors: number, rows: number): number {
  const wanted = Math.ceil((TARGET_BLOCKS_PER_SM * multiprocessors) / tiles);
  return Math.max(1, Math.min(wanted, Math.floor(kTiles / MIN_SPLIT_TILES), Math.floor(MAX_SPLIT_ROWS / rows)));
}

/**
 * out [rows, n] = x [rows, k] · Wᵀ (+ bias) on tensor cores, W decoded tile by tile in shared
 * memory (quantized-gemm.cu); x in W's stored column order (act-order activations permuted
 * first), quantizedGemvFits(w). `workspace` gives step memory for split-K partial sums.
 */
export function launchQuantizedGemm(device: CudaDevice, out: DevicePtr, x: DevicePtr, w: CudaQuantizedTensor, bias: DevicePtr, rows: number, workspace: (bytes: number) => DevicePtr): void {
  if (!quantizedGemvFits(w)) throw new Error(`launchQuantizedGemm: [${w.rows}, ${w.cols}] in groups of ${w.groupSize} does not split into ${chunkCols(w)}-column chunks`);
  const tileRows = quantizedGemmTileRows(rows);
  const kernel = device.kernel('quantized-gemm.cu', 'quantized_gemm_kernel', 'pppppppppiiiiiii', { FORMAT: formatCode(w.format), BM: tileRows, MINS: w.mins === 0 ? 0 : 1 });
  const tiles = Math.ceil(w.rows / TILE_COLS) * Math.ceil(rows / tileRows);
  const kTiles = Math.ceil(w.cols / TILE_K);
  const splits = quantizedGemmSplits(tiles, kTiles, device.info.multiprocessorCount, rows);
  const splitTiles = Math.ceil(kTiles / splits);
  const grid = [Math.ceil(w.rows / TILE_COLS), Math.ceil(rows / tileRows), Math.ceil(kTiles / splitTiles)];
  const split = splitWorkspace(device, workspace, grid[2], rows, w.rows, grid[0] * grid[1]);
  device.launch(kernel, grid, [THREADS], quantizedGemmSharedBytes(tileRows, w), [
    out, split.partial, split.arrival, x, w.codes, w.scales, w.zeros, w.mins, bias, rows, w.rows, w.cols, w.rowBytes, w.groups, Math.min(w.groupSize, w.cols), splitTiles,
  ]);
}
