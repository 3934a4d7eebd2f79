import { cpus } from 'node:os';
import type { Tensor } from '../backend/backend.ts';
import { CpuBackend } from '../backend/cpu/cpu-backend.ts';
import { gptqQuantize, hessianOf, type GptqOptions } from './gptq.ts';
import { outputError, type GroupQuantized } from './group-quantizer.ts';
import type { Hessian, QuantizeDevice } from './quantize-device.ts';
import { type LinearObserver, recordingBackend } from './recording-backend.ts';

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

const RecordingCpuBackend = recordingBackend(CpuBackend);

/** Quantization on the CPU, in float64: the reference the GPU's is tested against. */
export class HostQuantizeDevice implements QuantizeDevice {
  readonly name = 'cpu' as const;
  readonly deviceName = cpus()[0]?.model.trim() ?? 'unknown';
  readonly driverCudaVersion = null;

  newBackend(observe: LinearObserver): CpuBackend {
    return new RecordingCpuBackend(observe);
  }

  accumulateHessian(hessian: Hessian | null, x: Tensor, readHost: () => Float32Array): Hessian {
    const [n, cols] = x.shape;
    const into = (hessian as HostHessian | null) ?? new HostHessian(cols);
    const h = hessianOf(readHost(), n, cols);
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
