import type { CudaDevice } from '../cuda-device.ts';
import type { DevicePtr } from '../driver-api.ts';

/** out [rows] int32 = argmax of each row of x [rows, cols] bf16 (lowest index on ties, -1 if none is finite). */
export function launchArgmaxRows(device: CudaDevice, out: DevicePtr, x: DevicePtr, rows: number, cols: number): void {
  if (rows === 0) return;
  device.launch(device.kernel('argmax.cu', 'argmax_rows_kernel', 'ppi'), [rows], [1024], 0, [out, x, cols]);
}
