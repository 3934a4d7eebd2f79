import type { CudaDevice } from '../cuda-device.ts';
import type { DevicePtr } from '../driver-api.ts';

const THREADS = 256;

/**
 * codes [rows, cols] e4m3 and scales f32 [rows] from x [rows, cols] bf16, a scale per row
 * (fp8-activations.cu; cols a multiple of 8).
 */
export function launchQuantizeRowsE4m3(device: CudaDevice, codes: DevicePtr, scales: DevicePtr, x: DevicePtr, rows: number, cols: number): void {
  if (cols % 8 !== 0) throw new Error(`quantizeRowsE4m3: ${cols} columns is not a multiple of 8`);
  if (rows === 0) return;
  device.launch(device.kernel('fp8-activations.cu', 'quantize_rows_e4m3_kernel', 'pppi'), [rows], [THREADS], 0, [codes, scales, x, cols]);
}
