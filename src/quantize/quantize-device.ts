import { KeelError } from '../errors.ts';
import type { Backend, Tensor } from '../backend/backend.ts';
import type { GptqOptions } from './gptq.ts';
import type { GroupQuantized } from './group-quantizer.ts';

/** A linear layer's calibration Gram matrix H = XᵀX [cols, cols], wherever its device keeps it. */
export interface Hessian {
  readonly cols: number;
  /** H in float64 on the host. */
  toHost(): Float64Array;
  /** Frees its memory (device memory on the GPU); it is not used after, and a second call does nothing. */
  dispose(): void;
}

/**
 * Where `keel quantize` runs its heavy arithmetic: the calibration passes' forward (a backend of
 * its kind), the Hessians they accumulate, GPTQ, and the output errors (the reports', AWQ's
 * search's). The CPU's (host-quantize-device.ts) is the reference, and what `keel prune` uses; the
 * GPU's (cuda-quantize-device.ts) makes billion-parameter models practical (a 1B shape's GPTQ took
 * 3 minutes on an H100).
 */
export interface QuantizeDevice {
  readonly name: 'cpu' | 'cuda';
  /** The GPU's name, or the host CPU's model. */
  readonly deviceName: string;
  /** The driver's CUDA version (as cuDriverGetVersion gives it, e.g. 13000); null on the CPU. */
  readonly driverCudaVersion: number | null;
  /** A fresh backend for one calibration pass, calling `onLinear` with the input of every `linear` and `gatedLinear` before it multiplies (a gatedLinear that multiplies through linear calls it twice for one input). */
  newBackend(onLinear: (x: Tensor, weight: Tensor) => void): Backend;
  /** hessian (null: a new one) += xᵀx for a linear's input x [n, cols] on the pass's backend, also given on the host. */
  accumulateHessian(hessian: Hessian | null, x: Tensor, host: Float32Array, cols: number): Hessian;
  /** gptqQuantize (gptq.ts) of w [rows, cols] (not modified) on this device. */
  gptq(w: Float64Array, rows: number, cols: number, hessian: Hessian, o: GptqOptions): GroupQuantized;
  /** outputError (group-quantizer.ts): Σ‖x (w − approx)ᵀ‖² over x [n, cols]. */
  outputError(x: Float32Array, n: number, w: Float64Array, approx: Float64Array, rows: number, cols: number): number;
  dispose(): void;
}

/** Where `keel quantize --backend` runs: `auto` takes the GPU when one is usable. */
export type QuantizeDeviceChoice = 'auto' | 'cpu' | 'cuda';

/** The device `choice` names; `auto` says on stderr why it fell back to the CPU. */
export async function selectQuantizeDevice(choice: QuantizeDeviceChoice): Promise<QuantizeDevice> {
  const { HostQuantizeDevice } = await import('./host-quantize-device.ts');
  if (choice === 'cpu') return new HostQuantizeDevice();
  const { cudaAvailability } = await import('../backend/cuda/availability.ts');
  const availability = cudaAvailability();
  if (availability.ok) {
    const { CudaQuantizeDevice } = await import('./cuda-quantize-device.ts');
    return new CudaQuantizeDevice();
  }
  if (choice === 'cuda') throw new KeelError('backend', `the CUDA backend is unavailable: ${availability.reason}`);
  process.stderr.write(`keel: no usable CUDA GPU (${availability.reason}); quantizing on the CPU\n`);
  return new HostQuantizeDevice();
}
