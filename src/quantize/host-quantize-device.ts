import { cpus } from 'node:os';
import type { Activation, Tensor } from '../backend/backend.ts';
import { CpuBackend } from '../backend/cpu/cpu-backend.ts';
import { gptqQuantize, hessianOf, type GptqOptions } from './gptq.ts';
import { outputError, type GroupQuantized } from './group-quantizer.ts';
import type { Hessian, QuantizeDevice } from './quantize-device.ts';

/** A Hessian summed in float64 on the host. */
class HostHessian implements Hessian {
  readonly cols: number;
  readonly values: Float64Array;

  constructor(cols: number) {
    this.cols = cols;
    this.values = new Float64Array(cols * cols);
  }

  toHost(): Float64Array {
    return this.values;
  }

  dispose(): void {}
}

/** The CPU backend, calling `onLinear` with the input of each linear and gated linear (which may multiply through `linear`: the same call twice, calibrate counts once). */
class RecordingCpuBackend extends CpuBackend {
  private readonly onLinear: (x: Tensor, weight: Tensor) => void;

  constructor(onLinear: (x: Tensor, weight: Tensor) => void) {
    super();
    this.onLinear = onLinear;
  }

  override linear(x: Tensor, weight: Tensor, bias: Tensor | null, options?: { float32?: boolean }): Tensor {
    this.onLinear(x, weight);
    return super.linear(x, weight, bias, options);
  }

  override gatedLinear(x: Tensor, gateUp: Tensor, activation: Activation): Tensor {
    this.onLinear(x, gateUp);
    return super.gatedLinear(x, gateUp, activation);
  }
}

/** Quantization on the CPU, in float64: the reference the GPU's is tested against. */
export class HostQuantizeDevice implements QuantizeDevice {
  readonly name = 'cpu' as const;
  readonly deviceName = cpus()[0]?.model.trim() ?? 'unknown';
  readonly driverCudaVersion = null;

  newBackend(onLinear: (x: Tensor, weight: Tensor) => void): RecordingCpuBackend {
    return new RecordingCpuBackend(onLinear);
  }

  accumulateHessian(hessian: Hessian | null, _x: Tensor, host: Float32Array, cols: number): Hessian {
    const into = (hessian as HostHessian | null) ?? new HostHessian(cols);
    const h = hessianOf(host, host.length / cols, cols);
    for (let i = 0; i < h.length; i++) into.values[i] += h[i];
    return into;
  }

  gptq(w: Float64Array, rows: number, cols: number, hessian: Hessian, o: GptqOptions): GroupQuantized {
    return gptqQuantize(w.slice(), rows, cols, hessian.toHost(), o);
  }

  outputError(x: Float32Array, n: number, w: Float64Array, approx: Float64Array, rows: number, cols: number): number {
    return outputError(x, n, w, approx, rows, cols);
  }

  dispose(): void {}
}
