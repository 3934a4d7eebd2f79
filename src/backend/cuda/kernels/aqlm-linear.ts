import type { CudaDevice } from '../cuda-device.ts';
import type { CudaQuantizedTensor } from '../cuda-tensor.ts';
import type { DevicePtr } from '../driver-api.ts';
import { aqlmLayout, isAqlm } from '../../../tensor/quantized-weight.ts';

/**
 * Most batch rows the AQLM codebook-lookup GEMV takes (decode); larger batches dequantize the
 * weight to bf16 and run cuBLAS (prefill). A first guess, like QUANTIZED_GEMV_MAX_ROWS: the GEMV
 * decodes each group once for every batch row, so its cost grows with the rows; `keel bench
 * linear --format aqlm-2x8,aqlm-1x16` measures where the two meet.
 */
export const AQLM_GEMV_MAX_ROWS = 8;
/** Most stacked parts (each with its own codebooks) an AQLM weight may have on the GPU: q/k/v take 3. */
export const AQLM_MAX_PARTS = 4;
const THREADS = 256;
const MAX_BLOCKS = 8192;
/** Blocks per multiprocessor the GEMV aims for; each 2x8 block copies its rows' codebooks (8 KiB a part) into shared memory once. */
const GEMV_BLOCKS_PER_SM = 4;
/** Output rows a warp takes at a time (aqlm-linear.cu RPW). */
const ROWS_PER_WARP = 2;

/** Whether the GEMV takes this weight: whole 16-byte chunks of code words (64 columns) per row. */
export function aqlmGemvFits(w: CudaQuantizedTensor): boolean {
  return w.cols % 64 === 0;
}

function defines(w: CudaQuantizedTensor): { CODEBOOKS: number } {
  if (!isAqlm(w.format)) throw new Error(`aqlm-linear takes AQLM weights, not ${w.format}`);
  return { CODEBOOKS: aqlmLayout(w.format).codebooks };
}

/** The first three parts' end rows (unused ones past every row), as the kernels take them. */
function partEnds(w: CudaQuantizedTensor): [number, number, number] {
  const ends = [...w.partEnds.slice(0, -1), 0x7fffffff, 0x7fffffff, 0x7fffffff];
  return [ends[0], ends[1], ends[2]];
}

/** out [rows, n] bf16 = x [rows, k] · Wᵀ (+ bias) for 1 ≤ rows ≤ AQLM_GEMV_MAX_ROWS and aqlmGemvFits(w). */
export function launchAqlmGemv(device: CudaDevice, out: DevicePtr, x: DevicePtr, w: CudaQuantizedTensor, bias: DevicePtr, rows: number): void {
  if (!(rows >= 1 && rows <= AQLM_GEMV_MAX_ROWS)) throw new RangeError(`launchAqlmGemv: ${rows} rows is outside [1, ${AQLM_GEMV_MAX_ROWS}]`);
  if (!aqlmGemvFits(w)) throw new Error(`launchAqlmGemv: [${w.rows}, ${w.cols}] does not split into 64-column chunks of code words`);
  const kernel = device.kernel('aqlm-linear.cu', 'aqlm_gemv_kernel', 'ppppppiiiiii', { ...defines(w), ROWS: rows });
  // Whole warps' worth of rows per block, enough blocks to fill the GPU.
  const rowsPerWarpStep = (THREADS / 32) * ROWS_PER_WARP;
  const blocks = Math.min(Math.ceil(w.rows / rowsPerWarpStep), device.info.multiprocessorCount * GEMV_BLOCKS_PER_SM);
  const rowsPerBlock = Math.ceil(w.rows / blocks / rowsPerWarpStep) * rowsPerWarpStep;
  device.launch(kernel, [Math.ceil(w.rows / rowsPerBlock)], [THREADS], 0, [out, x, w.codes, w.codebooks, w.scales, bias, w.rows, w.cols, rowsPerBlock, ...partEnds(w)]);
}

/** out [W.rows, W.cols] bf16 = W dequantized. */
export function launchAqlmDequantize(device: CudaDevice, out: DevicePtr, w: CudaQuantizedTensor): void {
  const kernel = device.kernel('aqlm-linear.cu', 'aqlm_dequantize_kernel', 'ppppiiiii', defines(w));
  const blocks = Math.min(MAX_BLOCKS, Math.ceil((w.rows * w.cols) / 8 / THREADS));
  device.launch(kernel, [blocks], [THREADS], 0, [out, w.codes, w.codebooks, w.scales, w.rows, w.cols, ...partEnds(w)]);
}
