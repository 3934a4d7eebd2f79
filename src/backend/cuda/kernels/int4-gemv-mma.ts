import type { CudaDevice } from '../cuda-device.ts';
import type { CudaQuantizedTensor } from '../cuda-tensor.ts';
import type { DevicePtr } from '../driver-api.ts';
import { launchSplitReduce, QUANTIZED_GEMV_MAX_ROWS } from './quantized-linear.ts';

/** Columns of one step of int4_gemv_mma_kernel: every step lies in one scale group. */
const STEP_COLS = 128;
/** Warps of a block (WK), and steps one warp loads at once (UNROLL). */
const WARPS = 8;
const UNROLL = 2;
/** Warps a launch should have to keep every multiprocessor streaming: below it, the steps are split. */
const TARGET_WARPS_PER_SM = 16;

/**
 * Whether int4_gemv_mma_kernel takes the weight: int4 in Keel's row layout without mins (GGUF's
 * Q4_K keeps the CUDA-core GEMV), rows of whole 128-column steps, each inside one scale group.
 */
export function int4GemvMmaFits(w: CudaQuantizedTensor): boolean {
  return w.format === 'int4' && w.layout === 'rows' && w.mins === 0 && w.cols % STEP_COLS === 0 && (w.groupSize % STEP_COLS === 0 || w.groupSize === w.cols);
}

/**
 * How many parts the kernel splits each row's steps into: enough warps to fill `multiprocessors`,
 * none when the rows alone fill it, and never fewer than a round of the block's warps per part.
 */
export function int4GemvMmaSplits(w: CudaQuantizedTensor, multiprocessors: number): number {
  const steps = w.cols / STEP_COLS;
  const warps = Math.ceil(w.rows / 16) * WARPS;
  const wanted = Math.ceil((multiprocessors * TARGET_WARPS_PER_SM) / warps);
  return Math.max(1, Math.min(wanted, Math.floor(steps / (WARPS * UNROLL))));
}

/**
 * out [rows, n] = x [rows, k] · Wᵀ (+ bias) on the tensor cores (int4-gemv-mma.cu) for
 * 1 ≤ rows ≤ QUANTIZED_GEMV_MAX_ROWS, x in W's stored column order, int4GemvMmaFits(w).
 * `workspace` gives step memory for the split partial sums.
 */
export function launchInt4GemvMma(device: CudaDevice, out: DevicePtr, x: DevicePtr, w: CudaQuantizedTensor, bias: DevicePtr, rows: number, workspace: (bytes: number) => DevicePtr): void {
  if (!(rows >= 1 && rows <= QUANTIZED_GEMV_MAX_ROWS)) throw new RangeError(`launchInt4GemvMma: ${rows} rows is outside [1, ${QUANTIZED_GEMV_MAX_ROWS}]`);
  if (!int4GemvMmaFits(w)) throw new Error(`launchInt4GemvMma: ${w.format} [${w.rows}, ${w.cols}] in groups of ${w.groupSize} is not int4 in 128-column steps of one group`);
  const kernel = device.kernel('int4-gemv-mma.cu', 'int4_gemv_mma_kernel', 'pppppppiiiii', { ROWS: rows, ZEROS: w.zeros === 0 ? 0 : 1 });
  const steps = w.cols / STEP_COLS;
  const splitSteps = Math.ceil(steps / int4GemvMmaSplits(w, device.info.multiprocessorCount));
  const grid = [Math.ceil(w.rows / 16), Math.ceil(steps / splitSteps)];
  const partial = grid[1] > 1 ? workspace(4 * grid[1] * rows * w.rows) : 0;
  device.launch(kernel, grid, [32 * WARPS], 0, [out, partial, x, w.codes, w.scales, w.zeros, bias, w.rows, w.cols, w.groups, Math.min(w.groupSize, w.cols), splitSteps]);
  if (grid[1] > 1) launchSplitReduce(device, out, partial, bias, rows, w.rows, grid[1]);
}
