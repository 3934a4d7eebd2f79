import type { CudaDevice } from '../cuda-device.ts';
import type { DevicePtr } from '../driver-api.ts';

/**
 * out [rows, cols] = LayerNorm of each group of `width` values of x's rows, weight w and bias b
 * [cols] (b 0: none); width a multiple of 8 dividing cols. One block per group, one 16-byte chunk
 * per thread up to 1024 threads, at least one warp.
 */
export function launchLayerNorm(device: CudaDevice, out: DevicePtr, x: DevicePtr, w: DevicePtr, b: DevicePtr, rows: number, cols: number, width: number, eps: number): void {
  if (rows === 0) return;
  const kernel = device.kernel('layer-norm.cu', 'layer_norm_kernel', 'ppppiif');
  const threads = Math.min(1024, Math.max(32, Math.ceil(width / 8 / 32) * 32));
  device.launch(kernel, [rows * (cols / width)], [threads], 0, [out, x, w, b, width / 8, cols / width, eps]);
}
