import type { GateFunction, XieluParams } from '../../backend.ts';
import { MAX_GRID_Y, type CudaDevice } from '../cuda-device.ts';
import type { DevicePtr } from '../driver-api.ts';

const THREADS = 128;
/** Enough blocks to fill an H200 several times over; larger tensors loop (grid-stride). */
const MAX_BLOCKS = 4096;

/**
 * In place: y [rows, n] += bias [n] (bf16): 16-byte chunks when n is a multiple of 8, else one value
 * a thread; `float32`: y is f32, one value a thread (the narrow rows of an MoE router's logits).
 */
export function launchAddBias(device: CudaDevice, y: DevicePtr, bias: DevicePtr, rows: number, n: number, options: { float32?: boolean } = {}): void {
  if (rows === 0) return;
  if (options.float32) {
    const total = rows * n;
    device.launch(device.kernel('elementwise.cu', 'add_bias_f32_kernel', 'ppli'), [Math.min(MAX_BLOCKS, Math.ceil(total / THREADS))], [THREADS], 0, [y, bias, total, n]);
    return;
  }
  if (n % 8 === 0) {
    const n8 = n / 8;
    device.launch(device.kernel('elementwise.cu', 'add_bias_kernel', 'ppii'), [Math.ceil(n8 / THREADS), Math.min(rows, MAX_GRID_Y)], [THREADS], 0, [y, bias, rows, n8]);
    return;
  }
  const total = rows * n;
  const blocks = Math.min(MAX_BLOCKS, Math.ceil(total / THREADS));
  device.launch(device.kernel('elementwise.cu', 'add_bias_unaligned_kernel', 'ppli'), [blocks], [THREADS], 0, [y, bias, total, n]);
}

/** In place: x = cap · tanh(x / cap) over `numel` bf16 values. */
export function launchSoftcap(device: CudaDevice, x: DevicePtr, numel: number, cap: number): void {
  if (numel === 0) return;
  const blocks = Math.min(MAX_BLOCKS, Math.ceil(numel / THREADS));
  device.launch(device.kernel('elementwise.cu', 'softcap_kernel', 'plf'), [blocks], [THREADS], 0, [x, numel, cap]);
}

/** In place: x = x · factor over `numel` bf16 values. */
export function launchScale(device: CudaDevice, x: DevicePtr, numel: number, factor: number): void {
  if (numel === 0) return;
  const blocks = Math.min(MAX_BLOCKS, Math.ceil(numel / THREADS));
  device.launch(device.kernel('elementwise.cu', 'scale_kernel', 'plf'), [blocks], [THREADS], 0, [x, numel, factor]);
}

/** In place: x = x · σ(x) over `numel` bf16 values. */
export function launchSilu(device: CudaDevice, x: DevicePtr, numel: number): void {
  if (numel === 0) return;
  const blocks = Math.min(MAX_BLOCKS, Math.ceil(numel / THREADS));
  device.launch(device.kernel('elementwise.cu', 'silu_kernel', 'pl'), [blocks], [THREADS], 0, [x, numel]);
}

/** In place: xIELU (Backend.xielu) over `numel` bf16 values. */
export function launchXielu(device: CudaDevice, x: DevicePtr, numel: number, p: XieluParams): void {
  if (numel === 0) return;
  const blocks = Math.min(MAX_BLOCKS, Math.ceil(numel / THREADS));
  device.launch(device.kernel('elementwise.cu', 'xielu_kernel', 'plffff'), [blocks], [THREADS], 0, [x, numel, p.alphaP, p.alphaN, p.beta, p.eps]);
}

export interface MultiplyGateArgs {
  out: DevicePtr;
  /** [numel / cols, cols] bf16. */
  x: DevicePtr;
  /** [numel / cols, cols / group] bf16. */
  gate: DevicePtr;
  numel: number;
  cols: number;
  /** Consecutive columns of x each gate value covers. */
  group: number;
  fn: GateFunction;
}

/** out = x · fn(gate), each gate value over `group` consecutive columns (Backend.multiplyGate). */
export function launchMultiplyGate(device: CudaDevice, a: MultiplyGateArgs): void {
  if (a.numel === 0) return;
  const blocks = Math.min(MAX_BLOCKS, Math.ceil(a.numel / THREADS));
  device.launch(device.kernel('elementwise.cu', 'multiply_gate_kernel', 'pppliii'), [blocks], [THREADS], 0, [a.out, a.x, a.gate, a.numel, a.cols, a.group, a.fn === 'softplus' ? 1 : 0]);
}
