import type { CudaDevice } from '../cuda-device.ts';
import type { DevicePtr } from '../driver-api.ts';

/**
 * Most batch rows the headwise GEMV takes; larger batches are one cuBLAS strided-batched GEMM.
 * At four the kernel holds 120 registers per thread, no spills; the crossover with cuBLAS is not measured yet.
 */
export const HEADWISE_GEMV_MAX_ROWS = 4;
/** Weight rows per warp: the kernel's RW. */
export const HEADWISE_GEMV_ROWS_PER_WARP = 8;
const WARPS_PER_BLOCK = 4;

/**
 * out [rows, heads * n] = per head h, x[:, h * width .. + k] · w[h]ᵀ, w [heads, n, k], for
 * 1 ≤ rows ≤ HEADWISE_GEMV_MAX_ROWS; k and width multiples of 8, n of HEADWISE_GEMV_ROWS_PER_WARP.
 */
export function launchHeadwiseGemv(device: CudaDevice, out: DevicePtr, x: DevicePtr, w: DevicePtr, rows: number, heads: number, n: number, k: number, width: number): void {
  if (!(rows >= 1 && rows <= HEADWISE_GEMV_MAX_ROWS)) throw new RangeError(`launchHeadwiseGemv: ${rows} rows is outside [1, ${HEADWISE_GEMV_MAX_ROWS}]`);
  const kernel = device.kernel('headwise-gemv.cu', 'headwise_gemv_kernel', 'pppiiii', { ROWS: rows });
  const warps = (heads * n) / HEADWISE_GEMV_ROWS_PER_WARP;
  device.launch(kernel, [Math.ceil(warps / WARPS_PER_BLOCK)], [32 * WARPS_PER_BLOCK], 0, [out, x, w, heads, n, k / 8, width]);
}
