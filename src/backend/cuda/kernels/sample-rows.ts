import type { CudaDevice } from '../cuda-device.ts';
import type { DevicePtr } from '../driver-api.ts';

/**
 * out [rows] int32 = each row of x [rows, cols] bf16 sampled by Gumbel-max with its inverse
 * temperature (0: argmax) and seed, from f32 inverseTemperatures [rows] and u32 seeds [rows];
 * logprobs [rows] f32 = each sampled token's log-probability under the row's softmax.
 */
export function launchSampleRows(
  device: CudaDevice,
  out: DevicePtr,
  logprobs: DevicePtr,
  x: DevicePtr,
  rows: number,
  cols: number,
  inverseTemperatures: DevicePtr,
  seeds: DevicePtr,
): void {
  if (rows === 0) return;
  device.launch(device.kernel('sample-rows.cu', 'sample_rows_kernel', 'pppipp'), [rows], [1024], 0, [out, logprobs, x, cols, inverseTemperatures, seeds]);
}
