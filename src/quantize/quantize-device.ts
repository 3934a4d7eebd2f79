import type { Backend, Tensor } from '../backend/backend.ts';
import type { LinearObserver } from './recording-backend.ts';
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
  /** A fresh backend for one calibration pass, calling `observe` with the input of every linear before it multiplies (recording-backend.ts). */
  newBackend(observe: LinearObserver): Backend;
  /** hessian (null: a new one) += xᵀx for a linear's input x [n, cols] on the pass's backend; `readHost` copies x to the host (once). */
  accumulateHessian(hessian: Hessian | null, x: Tensor, readHost: () => Float32Array): Hessian;
  /** gptqQuantize (gptq.ts) of w [rows, cols] (not modified) on this device. */
  gptq(w: Float64Array, rows: number, cols: number, hessian: Hessian, o: GptqOptions): GroupQuantized;
  /** outputError (group-quantizer.ts): Σ‖x (w − approx)ᵀ‖² over x [n, cols]. */
  outputError(x: Float32Array, n: number, w: Float64Array, approx: Float64Array, rows: number, cols: number): number;
  dispose(): void;
}
