import type { Tensor } from '../backend/backend.ts';
import { CudaBackend } from '../backend/cuda/cuda-backend.ts';
import { CudaDevice } from '../backend/cuda/cuda-device.ts';
import { CudaTensor } from '../backend/cuda/cuda-tensor.ts';
import type { DevicePtr } from '../backend/cuda/driver-api.ts';
import type { GptqOptions } from './gptq.ts';
import { gptqOnCuda } from './gptq-cuda.ts';
import type { GroupQuantized } from './group-quantizer.ts';
import type { Hessian, QuantizeDevice } from './quantize-device.ts';
import { type LinearObserver, recordingBackend } from './recording-backend.ts';

/** A Hessian summed in float32 in device memory (the primary context's: every pass's backend and this device share it). */
class CudaHessian implements Hessian {
  readonly cols: number;
  readonly ptr: DevicePtr;
  private readonly device: CudaDevice;
  private disposed = false;

  constructor(device: CudaDevice, cols: number) {
    this.device = device;
    this.cols = cols;
    this.ptr = device.alloc(cols * cols * 4);
    // Zeroed on this device's stream, before a pass's stream adds to it.
    device.fillBytes(this.ptr, 0, cols * cols * 4);
    device.synchronize();
  }

  toHost(): Float64Array {
    const values = new Float32Array(this.cols * this.cols);
    this.device.download(values, this.ptr);
    return Float64Array.from(values);
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.device.free(this.ptr);
  }
}

const RecordingCudaBackend = recordingBackend(CudaBackend);

/**
 * Quantization on the GPU: calibration passes on the CUDA backend, Hessians summed by cuBLAS from
 * the bf16 activations in place (fp32 sums, on the pass's stream), GPTQ by gptqOnCuda, output
 * errors by an fp32 GEMM. Its own CudaDevice (stream, cuBLAS) does the arithmetic between passes.
 */
export class CudaQuantizeDevice implements QuantizeDevice {
  readonly name = 'cuda' as const;
  private readonly device = new CudaDevice(0);
  readonly deviceName = this.device.info.name;
  readonly driverCudaVersion = this.device.info.driverCudaVersion;
  /** The latest pass's backend, on whose stream its Hessians are summed. */
  private pass: CudaBackend | null = null;

  newBackend(observe: LinearObserver): CudaBackend {
    this.pass = new RecordingCudaBackend(observe);
    return this.pass;
  }

  accumulateHessian(hessian: Hessian | null, x: Tensor): Hessian {
    if (!(x instanceof CudaTensor) || this.pass === null) throw new Error('CudaQuantizeDevice: a linear input that is not its pass backend\'s');
    const [n, cols] = x.shape;
    const into = (hessian as CudaHessian | null) ?? new CudaHessian(this.device, cols);
    // On the pass's stream, in order with the forward that writes x and may reuse its memory
    // after; the pass's backend synchronizes when it is disposed, before GPTQ reads the sums.
    this.pass.device.cublas.accumulateGram(into.ptr, x.ptr, n, cols, x.dtype);
    return into;
  }

  gptq(w: Float64Array, rows: number, cols: number, hessian: Hessian, o: GptqOptions): GroupQuantized {
    return gptqOnCuda(this.device, w, rows, cols, (hessian as CudaHessian).ptr, o);
  }

  outputError(x: Float32Array, n: number, w: Float64Array, approx: Float64Array, rows: number, cols: number): number {
    if (n === 0) return 0;
    const diff = new Float32Array(rows * cols);
    for (let i = 0; i < diff.length; i++) diff[i] = w[i] - approx[i];
    const [xPtr, diffPtr, yPtr] = [this.device.alloc(x.byteLength), this.device.alloc(diff.byteLength), this.device.alloc(n * rows * 4)];
    try {
      this.device.uploadSync(xPtr, x.subarray(0, n * cols));
      this.device.uploadSync(diffPtr, diff);
      this.device.cublas.linearF32(yPtr, xPtr, diffPtr, n, rows, cols);
      const y = new Float32Array(n * rows);
      this.device.download(y, yPtr);
      let total = 0;
      for (const v of y) total += v * v;
      return total;
    } finally {
      for (const ptr of [xPtr, diffPtr, yPtr]) this.device.free(ptr);
    }
  }

  dispose(): void {
    this.device.dispose();
  }
}
