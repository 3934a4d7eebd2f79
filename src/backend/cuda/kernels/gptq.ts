import type { CudaDevice } from '../cuda-device.ts';
import type { DevicePtr } from '../driver-api.ts';

const THREADS = 256;
/** Columns gptq_block_kernel takes at once (GPTQ_BLOCK in gptq.cu). */
export const GPTQ_BLOCK = 128;
/** The diagonal blocks launchCholeskyDiagonal factors (CHOLESKY_BLOCK in gptq.cu). */
export const CHOLESKY_BLOCK = 64;

/** out [n, n] = in[index[i], index[j]]. */
export function launchGatherSymmetric(device: CudaDevice, out: DevicePtr, input: DevicePtr, index: DevicePtr, n: number): void {
  device.launch(device.kernel('gptq.cu', 'gather_symmetric_kernel', 'pppi'), [Math.ceil(n / THREADS), n], [THREADS], 0, [out, input, index, n]);
}

/** a[i, i] += add[i] (add 0: nothing added), then diagonal[i] = a[i, i] (diagonal 0: not written). */
export function launchDiagonal(device: CudaDevice, a: DevicePtr, add: DevicePtr, diagonal: DevicePtr, n: number): void {
  device.launch(device.kernel('gptq.cu', 'diagonal_kernel', 'pppi'), [Math.ceil(n / THREADS)], [THREADS], 0, [a, add, diagonal, n]);
}

/** a [n, n] = the identity. */
export function launchIdentity(device: CudaDevice, a: DevicePtr, n: number): void {
  device.launch(device.kernel('gptq.cu', 'identity_kernel', 'pi'), [Math.ceil(n / THREADS), n], [THREADS], 0, [a, n]);
}

/** out[i, j] (row-major) = in[n−1−j, n−1−i] with `in` column-major. */
export function launchReverseTranspose(device: CudaDevice, out: DevicePtr, input: DevicePtr, n: number): void {
  device.launch(device.kernel('gptq.cu', 'reverse_transpose_kernel', 'ppi'), [Math.ceil(n / THREADS), n], [THREADS], 0, [out, input, n]);
}

/** Factors column-major a's diagonal block [k, k + b) (b ≤ CHOLESKY_BLOCK) in place; `failed` (one int) is set when a pivot is not positive. */
export function launchCholeskyDiagonal(device: CudaDevice, a: DevicePtr, n: number, k: number, b: number, failed: DevicePtr): void {
  if (b > CHOLESKY_BLOCK) throw new RangeError(`launchCholeskyDiagonal: block ${b} is wider than ${CHOLESKY_BLOCK}`);
  device.launch(device.kernel('gptq.cu', 'cholesky_diagonal_kernel', 'piiip'), [1], [THREADS], 0, [a, n, k, b, failed]);
}

export interface GptqBlock {
  /** U [cols, cols] row-major, w [rows, cols] (GPTQ's column order), err [rows, count]. */
  u: DevicePtr;
  w: DevicePtr;
  err: DevicePtr;
  /** codes [rows, cols] u8 (the weight's own column order), scales f32 and zeros u8 [rows, groups], order [cols] i32. */
  codes: DevicePtr;
  scales: DevicePtr;
  zeros: DevicePtr;
  order: DevicePtr;
  rows: number;
  cols: number;
  start: number;
  count: number;
  groupSize: number;
  bits: number;
  symmetric: boolean;
}

/** Quantizes columns [start, start + count) of one GPTQ block (count ≤ GPTQ_BLOCK). */
export function launchGptqBlock(device: CudaDevice, b: GptqBlock): void {
  if (b.count > GPTQ_BLOCK) throw new RangeError(`launchGptqBlock: ${b.count} columns is more than ${GPTQ_BLOCK}`);
  const rowsPerBlock = THREADS / 32;
  device.launch(device.kernel('gptq.cu', 'gptq_block_kernel', 'pppppppiiiiiii'), [Math.ceil(b.rows / rowsPerBlock)], [THREADS], 0, [
    b.u,
    b.w,
    b.err,
    b.codes,
    b.scales,
    b.zeros,
    b.order,
    b.rows,
    b.cols,
    b.start,
    b.count,
    b.groupSize,
    b.bits,
    b.symmetric ? 1 : 0,
  ]);
}
