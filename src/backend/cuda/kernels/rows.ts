import type { CudaDevice } from '../cuda-device.ts';
import type { DevicePtr } from '../driver-api.ts';

/** out [numRows, cols] bf16 = src[indices[r], :]; cols a multiple of 8 (16-byte rows). */
export function launchGatherRows(device: CudaDevice, out: DevicePtr, src: DevicePtr, indices: DevicePtr, numRows: number, cols: number): void {
  if (numRows === 0) return;
  const chunks = cols / 8;
  const threads = Math.min(256, Math.ceil(chunks / 32) * 32);
  device.launch(device.kernel('rows.cu', 'gather_rows_kernel', 'pppi'), [numRows], [threads], 0, [out, src, indices, chunks]);
}
