import type { CudaDevice } from '../cuda-device.ts';
import type { DevicePtr } from '../driver-api.ts';

const THREADS = 256;

function gridFor(device: CudaDevice, n: number): number[] {
  return [Math.max(1, Math.min(Math.ceil(n / THREADS), device.info.multiprocessorCount * 16))];
}

/** out [n] bf16 = input [n] f32 or f16, rounded to nearest even. */
export function launchToBf16(device: CudaDevice, from: 'f32' | 'f16', out: DevicePtr, input: DevicePtr, n: number): void {
  const kernel = device.kernel('convert.cu', from === 'f32' ? 'f32_to_bf16_kernel' : 'f16_to_bf16_kernel', 'ppl');
  device.launch(kernel, gridFor(device, n), [THREADS], 0, [out, input, n]);
}

/** out [n] f32 = input [n] bf16 (exact). */
export function launchBf16ToF32(device: CudaDevice, out: DevicePtr, input: DevicePtr, n: number): void {
  device.launch(device.kernel('convert.cu', 'bf16_to_f32_kernel', 'ppl'), gridFor(device, n), [THREADS], 0, [out, input, n]);
}
