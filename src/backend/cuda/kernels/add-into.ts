import type { CudaDevice } from '../cuda-device.ts';
import type { DevicePtr } from '../driver-api.ts';

const THREADS = 128;

/** In place: target [rows, cols] += σ(gate[row]) · x, or += x for gate 0; cols a multiple of 8. */
export function launchAddInto(device: CudaDevice, target: DevicePtr, x: DevicePtr, gate: DevicePtr, rows: number, cols: number): void {
  if (rows === 0) return;
  const cols8 = cols / 8;
  device.launch(device.kernel('add-into.cu', 'add_into_kernel', 'pppi'), [rows, Math.ceil(cols8 / THREADS)], [THREADS], 0, [target, x, gate, cols8]);
}
