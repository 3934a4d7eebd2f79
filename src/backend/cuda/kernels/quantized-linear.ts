import type { CudaDevice } from '../cuda-device.ts';
import type { CudaQuantizedTensor } from '../cuda-tensor.ts';
import type { DevicePtr } from '../driver-api.ts';
import { isFourBit } from '../../../tensor/quantized-weight.ts';

/**
 * Most batch rows the quantized GEMV takes; larger batches dequantize to bf16 and run a cuBLAS
 * GEMM. The GEMV decodes each code once for all rows but multiplies every row by it, so its cost
 * per code grows with the rows while a GEMM's stays flat: a first guess, to be set by measuring
 * on the H200 (docs/quantization.md).
 */
export const QUANTIZED_GEMV_MAX_ROWS = 8;
const WARPS_PER_BLOCK = 4;
const THREADS = 256;
const MAX_BLOCKS = 8192;

const FORMAT_CODE = { int4: 0, int8: 1, 'fp8-e4m3': 2, nf4: 3, fp4: 4 } as const;

/** Columns of one 16-byte chunk of codes, the GEMV's unit: every chunk lies in one scale group. */
function chunkCols(w: CudaQuantizedTensor): number {
  return isFourBit(w.format) ? 32 : 16;
}

/** Whether the GEMV takes this weight: whole chunks per row, each inside one scale group. */
export function quantizedGemvFits(w: CudaQuantizedTensor): boolean {
  const chunk = chunkCols(w);
  return w.cols % chunk === 0 && (w.groupSize % chunk === 0 || w.groupSize === w.cols);
}

/**
 * out [rows, n] = x [rows, k] · Wᵀ (+ bias) for 1 ≤ rows ≤ QUANTIZED_GEMV_MAX_ROWS, x in W's
 * stored column order (an act-order weight's activations permuted first), quantizedGemvFits(w).
 */
export function launchQuantizedGemv(device: CudaDevice, out: DevicePtr, x: DevicePtr, w: CudaQuantizedTensor, bias: DevicePtr, rows: number): void {
  if (!(rows >= 1 && rows <= QUANTIZED_GEMV_MAX_ROWS)) throw new RangeError(`launchQuantizedGemv: ${rows} rows is outside [1, ${QUANTIZED_GEMV_MAX_ROWS}]`);
  if (!quantizedGemvFits(w)) throw new Error(`launchQuantizedGemv: [${w.rows}, ${w.cols}] in groups of ${w.groupSize} does not split into ${chunkCols(w)}-column chunks`);
  const defines = { FORMAT: FORMAT_CODE[w.format], ROWS: rows, ZEROS: w.zeros === 0 ? 0 : 1 };
  const kernel = device.kernel('quantized-linear.cu', 'quantized_gemv_kernel', 'ppppppiiii', defines);
  device.launch(kernel, [Math.ceil(w.rows / WARPS_PER_BLOCK)], [32 * WARPS_PER_BLOCK], 0, [
    out, x, w.codes, w.scales, w.zeros, bias, w.rows, w.cols / chunkCols(w), w.groups, Math.min(w.groupSize, w.cols),
  ]);
}

/** out [W.rows, W.cols] bf16 = W dequantized, in input column order. */
export function launchDequantize(device: CudaDevice, out: DevicePtr, w: CudaQuantizedTensor): void {
  const kernel = device.kernel('quantized-linear.cu', 'dequantize_kernel', 'pppppiiiii', { FORMAT: FORMAT_CODE[w.format] });
  const blocks = Math.min(MAX_BLOCKS, Math.ceil((w.rows * w.cols) / THREADS));
  device.launch(kernel, [blocks], [THREADS], 0, [out, w.codes, w.scales, w.zeros, w.perm, w.rows, w.cols, w.groups, w.groupSize, w.rowBytes]);
}

/** out [rows, cols] = x[:, perm]. */
export function launchPermuteColumns(device: CudaDevice, out: DevicePtr, x: DevicePtr, perm: DevicePtr, rows: number, cols: number): void {
  const blocks = Math.min(MAX_BLOCKS, Math.ceil((rows * cols) / THREADS));
  device.launch(device.kernel('quantized-linear.cu', 'permute_columns_kernel', 'pppii'), [blocks], [THREADS], 0, [out, x, perm, rows, cols]);
}
