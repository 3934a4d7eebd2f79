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
    device.fillBytes(this.ptr, 0, cols * cols * 4);
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
 * the bf16 activations in place (fp32 sums), GPTQ by gptqOnCuda, output errors by an fp32 GEMM.
 * Its own CudaDevice (stream, cuBLAS) does the arithmetic between passes.
 */
export class CudaQuantizeDevice implements QuantizeDevice {
  readonly name = 'cuda' as const;
  private readonly device = new CudaDevice(0);
  readonly deviceName = this.device.info.name;
  readonly driverCudaVersion = this.device.info.driverCudaVersion;

  newBackend(observe: LinearObserver): CudaBackend {
    return new RecordingCudaBackend(observe);
  }

  accumulateHessian(hessian: Hessian | null, x: Tensor, host: Float32Array, cols: number): Hessian {
    // x was just read back to `host`, so the pass's stream has written it; this stream is
    // synchronized after, before the pass goes on and may reuse its memory.
    if (!(x instanceof CudaTensor)) throw new Error('CudaQuantizeDevice: a linear input is not a CUDA tensor');
    const into = (hessian as CudaHessian | null) ?? new CudaHessian(this.device, cols);
    this.device.cublas.accumulateGram(into.ptr, x.ptr, host.length / cols, cols, x.dtype);
    this.device.synchronize();
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
