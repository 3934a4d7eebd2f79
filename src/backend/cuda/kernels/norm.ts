import type { CudaDevice } from '../cuda-device.ts';
import type { DevicePtr } from '../driver-api.ts';

/** Threads per row: one 16-byte chunk each up to 1024 threads, at least one warp. */
function threadsForRow(cols: number): number {
  return Math.min(1024, Math.max(32, Math.ceil(cols / 8 / 32) * 32));
}

/** out [rows, cols] = rmsNorm(x) * w; cols a multiple of 8. */
export function launchRmsNorm(device: CudaDevice, out: DevicePtr, x: DevicePtr, w: DevicePtr, rows: number, cols: number, eps: number): void {
  if (rows === 0) return;
  const kernel = device.kernel('norm.cu', 'rms_norm_kernel', 'pppif');
  device.launch(kernel, [rows], [threadsForRow(cols)], 0, [out, x, w, cols / 8, eps]);
}

/** residual += x in place (rounded to bf16), out = rmsNorm(residual) * w. */
export function launchAddRmsNorm(
  device: CudaDevice,
  out: DevicePtr,
  residual: DevicePtr,
  x: DevicePtr,
  w: DevicePtr,
  rows: number,
  cols: number,
  eps: number,
): void {
  if (rows === 0) return;
  const kernel = device.kernel('norm.cu', 'add_rms_norm_kernel', 'ppppif');
  device.launch(kernel, [rows], [threadsForRow(cols)], 0, [out, residual, x, w, cols / 8, eps]);
}

/** Warps (heads) of a head_rms_norm_kernel block. */
const HEAD_NORM_WARPS = 4;

/**
 * In place per-head RMSNorm of the query heads (qWeight) and key heads (kWeight) of packed qkv rows,
 * and of the value heads (vWeight) where one is given.
 */
export function launchHeadRmsNorm(
  device: CudaDevice,
  qkv: DevicePtr,
  qWeight: DevicePtr,
  kWeight: DevicePtr,
  vWeight: DevicePtr | null,
  rows: number,
  numHeads: number,
  numKvHeads: number,
  headDim: number,
  eps: number,
): void {
  if (rows === 0) return;
  const kernel = device.kernel('norm.cu', 'head_rms_norm_kernel', 'ppppiiiiif');
  const rowWidth = (numHeads + 2 * numKvHeads) * headDim;
  const normedHeads = numHeads + (vWeight === null ? 1 : 2) * numKvHeads;
  device.launch(kernel, [rows, Math.ceil(normedHeads / HEAD_NORM_WARPS)], [32 * HEAD_NORM_WARPS], 0, [qkv, qWeight, kWeight, vWeight ?? 0, numHeads, numKvHeads, normedHeads, headDim, rowWidth, eps]);
}
