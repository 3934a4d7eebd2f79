import type { Activation } from '../../backend.ts';
import { MAX_GRID_Y, type CudaDevice } from '../cuda-device.ts';
import type { DevicePtr } from '../driver-api.ts';

const THREADS = 128;

/**
 * ACT of gated-activation.cuh, the compile-time choice of every kernel that applies the activation
 * (this file's, the gated GEMV's, the MoE experts'), and the clamped SwiGLU's runtime constants.
 */
export function activationDefines(activation: Activation): { ACT: number; alpha: number; limit: number } {
  switch (activation.kind) {
    case 'silu':
      return { ACT: 0, alpha: 0, limit: 0 };
    case 'gelu-tanh':
      return { ACT: 1, alpha: 0, limit: 0 };
    case 'clamped-swiglu':
      return { ACT: 2, alpha: activation.alpha, limit: activation.limit };
    case 'gelu':
      return { ACT: 3, alpha: 0, limit: 0 };
    case 'relu':
      return { ACT: 4, alpha: 0, limit: 0 };
  }
}

/** out [rows, n] = act(gateUp[:, :n]) * gateUp[:, n:]; n a multiple of 8. */
export function launchGatedActivation(device: CudaDevice, out: DevicePtr, gateUp: DevicePtr, rows: number, n: number, activation: Activation): void {
  if (rows === 0) return;
  const n8 = n / 8;
  const { ACT, alpha, limit } = activationDefines(activation);
  const kernel = device.kernel('activation.cu', 'gated_activation_kernel', 'ppiiff', { ACT });
  device.launch(kernel, [Math.ceil(n8 / THREADS), Math.min(rows, MAX_GRID_Y)], [THREADS], 0, [out, gateUp, rows, n8, alpha, limit]);
}
