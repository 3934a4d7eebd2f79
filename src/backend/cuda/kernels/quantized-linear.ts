import type { CudaDevice } from '../cuda-device.ts';
import type { CudaQuantizedTensor } from '../cuda-tensor.ts';
import type { DevicePtr } from '../driver-api.ts';
import type { EmbedTokensArgs } from './rows.ts';
import { isAqlm, isFourBit, type QuantizedFormat } from '../../../tensor/quantized-weight.ts';

/**
 * Most batch rows the quantized GEMV takes; larger batches go to the tensor-core GEMM
 * (quantized-gemm.ts). The GEMV decodes each code once for all rows but multiplies every row by
 * it on the CUDA cores, so its cost per code grows with the rows while a GEMM's stays flat: a
 * first guess, to be set from `keel bench linear` on the H200 (docs/quantization.md).
 */
export const QUANTIZED_GEMV_MAX_ROWS = 8;
const WARPS_PER_BLOCK = 4;
const THREADS = 256;
const MAX_BLOCKS = 8192;

const FORMAT_CODE = { int4: 0, int8: 1, 'fp8-e4m3': 2, nf4: 3, fp4: 4 } as const;

/** FORMAT of the quantized kernels' builds (AQLM weights have kernels of their own: aqlm-linear.ts). */
export function formatCode(format: QuantizedFormat): number {
  if (isAqlm(format)) throw new Error(`the per-column quantized kernels do not take ${format} weights (aqlm-linear.ts does)`);
  return FORMAT_CODE[format];
}

/** Columns of one 16-byte chunk of codes, the kernels' unit: every chunk lies in one scale group. */
export function chunkCols(w: CudaQuantizedTensor): number {
  return isFourBit(w.format) ? 32 : 16;
}

/** Whether the GEMV and the tensor-core GEMM take this weight: whole chunks per row, each inside one scale group. */
export function quantizedGemvFits(w: CudaQuantizedTensor): boolean {
  const chunk = chunkCols(w);
  return w.cols % chunk === 0 && (w.groupSize % chunk === 0 || w.groupSize === w.cols);
}

/** Output rows one warp of quantized_gemv_kernel gives (its RPW). */
const GEMV_ROWS_PER_WARP = 4;
/** Warps a GEMV launch should have to keep every multiprocessor streaming: below it, the columns are split. */
const GEMV_TARGET_WARPS_PER_SM = 16;
/** Fewest 16-byte chunks of a row one split covers (a lane's loads must stay worth their launch). */
const GEMV_MIN_SPLIT_CHUNKS = 64;

/**
 * How many parts quantized_gemv_kernel splits each row's columns into: enough warps to fill
 * `multiprocessors` (split-K for layers with few output rows, such as o_proj and small models'
 * projections), none when the rows alone fill it.
 */
export function quantizedGemvSplits(w: CudaQuantizedTensor, multiprocessors: number): number {
  const rowChunks = w.cols / chunkCols(w);
  const warps = Math.ceil(w.rows / GEMV_ROWS_PER_WARP);
  const wanted = Math.ceil((multiprocessors * GEMV_TARGET_WARPS_PER_SM) / warps);
  return Math.max(1, Math.min(wanted, Math.floor(rowChunks / GEMV_MIN_SPLIT_CHUNKS)));
}

/**
 * out [rows, n] = x [rows, k] · Wᵀ (+ bias) for 1 ≤ rows ≤ QUANTIZED_GEMV_MAX_ROWS, x in W's
 * stored column order (an act-order weight's activations permuted first), quantizedGemvFits(w).
 * `workspace` gives step memory for the split-K partial sums when the columns are split; the last
 * split of each block adds them (split-k.cuh).
 */
export function launchQuantizedGemv(device: CudaDevice, out: DevicePtr, x: DevicePtr, w: CudaQuantizedTensor, bias: DevicePtr, rows: number, workspace: (bytes: number) => DevicePtr): void {
  if (!(rows >= 1 && rows <= QUANTIZED_GEMV_MAX_ROWS)) throw new RangeError(`launchQuantizedGemv: ${rows} rows is outside [1, ${QUANTIZED_GEMV_MAX_ROWS}]`);
  if (!quantizedGemvFits(w)) throw new Error(`launchQuantizedGemv: [${w.rows}, ${w.cols}] in groups of ${w.groupSize} does not split into ${chunkCols(w)}-column chunks`);
  const defines = { FORMAT: formatCode(w.format), ROWS: rows, ZEROS: w.zeros === 0 ? 0 : 1, MINS: w.mins === 0 ? 0 : 1 };
  const kernel = device.kernel('quantized-linear.cu', 'quantized_gemv_kernel', 'pppppppppiiiii', defines);
  const rowChunks = w.cols / chunkCols(w);
  const splits = quantizedGemvSplits(w, device.info.multiprocessorCount);
  // Whole 32-chunk strides per split, so every lane of a split starts inside it.
  const splitChunks = Math.ceil(rowChunks / splits / 32) * 32;
  const grid = [Math.ceil(w.rows / (WARPS_PER_BLOCK * GEMV_ROWS_PER_WARP)), Math.ceil(rowChunks / splitChunks)];
  const split = splitWorkspace(device, workspace, grid[1], rows, w.rows, grid[0]);
  device.launch(kernel, grid, [32 * WARPS_PER_BLOCK], 0, [
    out, split.partial, split.arrival, x, w.codes, w.scales, w.zeros, w.mins, bias, w.rows, rowChunks, w.groups, Math.min(w.groupSize, w.cols), splitChunks,
  ]);
}

/**
 * What a split-K launch of `splits` splits passes its kernel (split-k.cuh): partial [splits, rows,
 * n] f32 from the step's workspace and one arrival counter for each of its `tiles` output tiles;
 * both null for one split.
 */
export function splitWorkspace(device: CudaDevice, workspace: (bytes: number) => DevicePtr, splits: number, rows: number, n: number, tiles: number): { partial: DevicePtr; arrival: DevicePtr } {
  if (splits === 1) return { partial: 0, arrival: 0 };
  return { partial: workspace(4 * splits * rows * n), arrival: device.arrivalCounters(tiles) };
}

/**
 * out [W.rows, W.cols] bf16 = W dequantized, in input column order; each run of `permRows` rows
 * with its own act-order permutation (routed experts stacked: an expert's rows), by default one.
 */
export function launchDequantize(device: CudaDevice, out: DevicePtr, w: CudaQuantizedTensor, permRows = w.rows): void {
  const kernel = device.kernel('quantized-linear.cu', 'dequantize_kernel', 'ppppppiiiiii', { FORMAT: formatCode(w.format) });
  const blocks = Math.min(MAX_BLOCKS, Math.ceil((w.rows * w.cols) / THREADS));
  device.launch(kernel, [blocks], [THREADS], 0, [out, w.codes, w.scales, w.zeros, w.mins, w.perm, w.rows, w.cols, w.groups, w.groupSize, w.rowBytes, permRows]);
}

/**
 * The embedding lookup from a quantized table `w` (int4 or int8, row layout, no act-order): out
 * [numRows, w.cols] bf16 = each token's row dequantized, times `scale`; tokens, sources, sampled
 * and firstRow as launchEmbedTokens (rows.ts) takes them.
 */
export function launchEmbedQuantizedTokens(device: CudaDevice, a: Omit<EmbedTokensArgs, 'table' | 'vocab' | 'cols'>, w: CudaQuantizedTensor): void {
  if (a.numRows === 0) return;
  const kernel = device.kernel('quantized-linear.cu', 'embed_quantized_tokens_kernel', 'ppppppppiiiiiif', { FORMAT: formatCode(w.format) });
  device.launch(kernel, [a.numRows], [Math.min(THREADS, Math.ceil(w.cols / 32) * 32)], 0, [
    a.out, w.codes, w.scales, w.zeros, w.mins, a.tokens, a.sources, a.sampled, a.firstRow, w.rows, w.cols, w.groups, w.groupSize, w.rowBytes, a.scale,
  ]);
}

/** out [rows, cols] = x[:, perm]. */
export function launchPermuteColumns(device: CudaDevice, out: DevicePtr, x: DevicePtr, perm: DevicePtr, rows: number, cols: number): void {
  const blocks = Math.min(MAX_BLOCKS, Math.ceil((rows * cols) / THREADS));
  device.launch(device.kernel('quantized-linear.cu', 'permute_columns_kernel', 'pppii'), [blocks], [THREADS], 0, [out, x, perm, rows, cols]);
}
