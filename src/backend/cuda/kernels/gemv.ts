import type { CudaDevice } from '../cuda-device.ts';
import type { DevicePtr } from '../driver-api.ts';

/** Most batch rows the GEMV kernel takes; larger batches are cuBLAS GEMMs. */
export const GEMV_MAX_ROWS = 8;
const WARPS_PER_BLOCK = 4;

/**
 * out [rows, n] = x [rows, k] · w [n, k]^T (+ bias [n], or 0 for none) for 1 ≤ rows ≤ GEMV_MAX_ROWS;
 * k a multiple of 8. One kernel per row count, each weight load serving every row.
 */
export function launchGemv(device: CudaDevice, out: DevicePtr, x: DevicePtr, w: DevicePtr, bias: DevicePtr, rows: number, n: number, k: number): void {
  if (!(rows >= 1 && rows <= GEMV_MAX_ROWS)) throw new RangeError(`launchGemv: ${rows} rows is outside [1, ${GEMV_MAX_ROWS}]`);
  const kernel = device.kernel('gemv.cu', 'gemv_kernel', 'ppppii', { ROWS: rows });
  device.launch(kernel, [Math.ceil(n / WARPS_PER_BLOCK)], [32 * WARPS_PER_BLOCK], 0, [out, x, w, bias, n, k / 8]);
}
