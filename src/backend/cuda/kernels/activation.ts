import type { CudaDevice } from '../cuda-device.ts';
import type { DevicePtr } from '../driver-api.ts';

const THREADS = 128;

/** out [rows, n] = silu(gateUp[:, :n]) * gateUp[:, n:]; n a multiple of 8. */
export function launchSiluMul(device: CudaDevice, out: DevicePtr, gateUp: DevicePtr, rows: number, n: number): void {
  if (rows === 0) return;
  const n8 = n / 8;
  device.launch(device.kernel('activation.cu', 'silu_mul_kernel', 'ppi'), [Math.ceil(n8 / THREADS), rows], [THREADS], 0, [out, gateUp, n8]);
}

/** In place: y [rows, n] += bias [n]; n a multiple of 8. */
export function launchAddBias(device: CudaDevice, y: DevicePtr, bias: DevicePtr, rows: number, n: number): void {
  if (rows === 0) return;
  const n8 = n / 8;
  device.launch(device.kernel('activation.cu', 'add_bias_kernel', 'ppi'), [Math.ceil(n8 / THREADS), rows], [THREADS], 0, [y, bias, n8]);
}
