import type { CudaDevice } from '../cuda-device.ts';
import type { CudaQuantizedTensor } from '../cuda-tensor.ts';
import type { DevicePtr } from '../driver-api.ts';
import { formatCode, QUANTIZED_GEMV_MAX_ROWS, splitWorkspace } from './quantized-linear.ts';

/** Warps of a block (WK), and steps one warp loads at once (UNROLL). */
const WARPS = 8;
const UNROLL = 2;
/** Warps a launch should have to keep every multiprocessor streaming: below it, the steps are split. */
const TARGET_WARPS_PER_SM = 16;

/** Columns of one step of gemv_mma_kernel (a quad's four 16-byte loads of codes), or null for a format it does not take. */
function stepCols(w: CudaQuantizedTensor): number | null {
  if (w.format === 'int4') return 128;
  return w.format === 'fp8-e4m3' ? 64 : null;
}

/**
 * Whether gemv_mma_kernel takes the weight: int4 without mins (GGUF's Q4_K keeps the CUDA-core
 * GEMV) or fp8 in Keel's row layout, rows of whole steps, each step inside one scale group.
 */
export function gemvMmaFits(w: CudaQuantizedTensor): boolean {
  const step = stepCols(w);
  return step !== null && w.layout === 'rows' && w.mins === 0 && w.cols % step === 0 && (w.groupSize % step === 0 || w.groupSize === w.cols);
}

/**
 * How many parts the kernel splits each row's steps into: enough warps to fill `multiprocessors`,
 * none when the rows alone fill it, and never fewer than a round of the block's warps per part.
 */
export function gemvMmaSplits(w: CudaQuantizedTensor, multiprocessors: number): number {
  const steps = w.cols / stepCols(w)!;
  const warps = Math.ceil(w.rows / 16) * WARPS;
  const wanted = Math.ceil((multiprocessors * TARGET_WARPS_PER_SM) / warps);
  return Math.max(1, Math.min(wanted, Math.floor(steps / (WARPS * UNROLL))));
}

/**
 * out [rows, n] = x [rows, k] · Wᵀ (+ bias) on the tensor cores (gemv-mma.cu) for
 * 1 ≤ rows ≤ QUANTIZED_GEMV_MAX_ROWS, x in W's stored column order, gemvMmaFits(w).
 * `workspace` gives step memory for the split partial sums.
 */
export function launchGemvMma(device: CudaDevice, out: DevicePtr, x: DevicePtr, w: CudaQuantizedTensor, bias: DevicePtr, rows: number, workspace: (bytes: number) => DevicePtr): void {
  if (!(rows >= 1 && rows <= QUANTIZED_GEMV_MAX_ROWS)) throw new RangeError(`launchGemvMma: ${rows} rows is outside [1, ${QUANTIZED_GEMV_MAX_ROWS}]`);
  if (!gemvMmaFits(w)) throw new Error(`launchGemvMma: ${w.format} [${w.rows}, ${w.cols}] in groups of ${w.groupSize} is not int4 or fp8 in whole steps of one group`);
  const kernel = device.kernel('gemv-mma.cu', 'gemv_mma_kernel', 'ppppppppiiiii', { FORMAT: formatCode(w.format), ROWS: rows, ZEROS: w.zeros === 0 ? 0 : 1 });
  const steps = w.cols / stepCols(w)!;
  const splitSteps = Math.ceil(steps / gemvMmaSplits(w, device.info.multiprocessorCount));
  const grid = [Math.ceil(w.rows / 16), Math.ceil(steps / splitSteps)];
  const split = splitWorkspace(device, workspace, grid[1], rows, w.rows, grid[0]);
  device.launch(kernel, grid, [32 * WARPS], 0, [out, split.partial, split.arrival, x, w.codes, w.scales, w.zeros, bias, w.rows, w.cols, w.groups, Math.min(w.groupSize, w.cols), splitSteps]);
}
