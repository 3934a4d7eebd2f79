import type { CudaDevice } from '../cuda-device.ts';
import type { CudaQuantizedTensor } from '../cuda-tensor.ts';
import type { DevicePtr } from '../driver-api.ts';
import { launchAddBias } from './elementwise.ts';
import { launchQuantizeRowsE4m3 } from './fp8-activations.ts';

/**
 * W8A8: an fp8 weight times activations quantized to e4m3 per token at run time (dynamic
 * scales), on FP8 tensor cores through cuBLASLt (cublas-lt.ts), at twice the bf16 rate and without
 * dequantizing the weight. The activations lose precision (a scale per token, 3 mantissa bits),
 * as they do in vLLM's and transformers' FP8 paths; backend/cpu/ops/fp8-activations.ts is the
 * CPU twin.
 */

/**
 * Whether a weight's layout is one cuBLASLt's FP8 GEMM reads as it is: fp8 codes in Keel's row
 * layout with one scale per output row (per-tensor and per-channel checkpoints, `--quantization
 * fp8`; block-scaled ones keep the weight-only kernels), no act-order, and both dimensions
 * multiples of 16 (FP8 operands' alignment).
 */
export function w8a8Fits(w: CudaQuantizedTensor): boolean {
  return w.format === 'fp8-e4m3' && w.layout === 'rows' && w.groups === 1 && w.perm === 0 && w.mixedInt8Threshold === null && w.rows % 16 === 0 && w.cols % 16 === 0;
}

/** Where the activations' e4m3 codes [rows, cols] and float32 scales [rows] go (step memory). */
export interface W8a8Scratch {
  codes: DevicePtr;
  scales: DevicePtr;
}

/** out [rows, w.rows] (bf16) = x [rows, w.cols] · Wᵀ (+ bias). Only where w8a8Fits and device.cublasLt.fp8RowScaledFits. */
export function launchW8a8Linear(device: CudaDevice, out: DevicePtr, x: DevicePtr, w: CudaQuantizedTensor, bias: DevicePtr, rows: number, scratch: W8a8Scratch): void {
  launchQuantizeRowsE4m3(device, scratch.codes, scratch.scales, x, rows, w.cols);
  device.cublasLt.fp8RowScaled(out, scratch.codes, scratch.scales, w.codes, w.scales, rows, w.rows, w.cols);
  if (bias !== 0) launchAddBias(device, out, bias, rows, w.rows);
}
