import type { CudaQuantizedTensor } from '../cuda-tensor.ts';
import { gemvMmaFits } from './gemv-mma.ts';
import { marlinProblem } from './marlin-layout.ts';
import { QUANTIZED_GEMM_MAX_ROWS } from './quantized-gemm.ts';
import { QUANTIZED_GEMV_MAX_ROWS, quantizedGemvFits } from './quantized-linear.ts';
import { w8a8Fits } from './w8a8-linear.ts';
import type { QuantizedWeight } from '../../../tensor/quantized-weight.ts';

// Which kernel multiplies a quantized linear weight: the one table of the CUDA backend's choices.

/**
 * Most batch rows the fragment-layout GEMM (marlin-gemm.cu) takes; past it the weight is
 * dequantized to bf16 once per call and cuBLAS runs, whose Hopper GEMM (wgmma) outruns mma.sync
 * once the work is compute-bound. A first setting, to be checked with `keel bench linear`.
 */
export const MARLIN_MAX_ROWS = 256;

/**
 * Whether a weight is loaded in the fragment layout. `enabled`: the backend's switch (off until
 * the kernel's GPU tests and `keel bench linear` figures are in). Shapes it does not fit, nf4/fp4
 * (table codes) and LLM.int8() keep Keel's row layout and the classic kernels.
 */
export function loadsInMarlinLayout(w: QuantizedWeight, enabled: boolean): boolean {
  return enabled && marlinProblem(w) === null;
}

export type QuantizedPath = 'gemv' | 'gemv-mma' | 'gemm' | 'marlin' | 'dequantize';

/**
 * Which GEMV multiplies int4 and fp8 decode rows: `cuda-cores` (quantized-linear.cu, every format),
 * `tensor-cores` (gemv-mma.cu, where gemvMmaFits; the other formats stay on the CUDA cores) or
 * `auto`, the measured winner of each (bench/results/linear-llama-3.1-8b-gemv-mma-h200.json, H200):
 * the tensor cores for fp8 at every decode row count (1.18-1.35x the CUDA-core GEMV at one row,
 * 2.2-2.9x at eight) and for int4 from two rows (1.14-1.42x at two, 2.1-2.4x at eight), the CUDA
 * cores for int4 at one row, where they stream three of the 8B's four shapes faster (gate_up 27.8
 * against 32.1 us, down 18.1 against 19.5).
 */
export type QuantizedGemvKernel = 'auto' | 'cuda-cores' | 'tensor-cores';
export const QUANTIZED_GEMV_KERNELS: readonly QuantizedGemvKernel[] = ['auto', 'cuda-cores', 'tensor-cores'];

function usesTensorCores(w: CudaQuantizedTensor, rows: number, gemv: QuantizedGemvKernel): boolean {
  if (!gemvMmaFits(w)) return false;
  if (gemv === 'auto') return w.format === 'fp8-e4m3' || rows >= 2;
  return gemv === 'tensor-cores';
}

/**
 * How fp8 weights multiply batches past the tensor-core GEMM's rows (prefills): `w8a16`
 * dequantizes the weight to bf16 for cuBLAS, the activations exact; `w8a8` quantizes the
 * activations to e4m3 per token and runs cuBLASLt's FP8 GEMM (w8a8-linear.ts), where the weight's
 * layout and the GPU allow it. Decode batches keep the weight-only GEMV and GEMM either way.
 */
export type Fp8Gemm = 'w8a16' | 'w8a8';
export const FP8_GEMMS: readonly Fp8Gemm[] = ['w8a16', 'w8a8'];

/** Whether `rows` batch rows of an fp8 weight take W8A8 under `fp8Gemm` (before asking cuBLASLt for the shape). */
export function takesW8a8(w: CudaQuantizedTensor, rows: number, fp8Gemm: Fp8Gemm): boolean {
  return fp8Gemm === 'w8a8' && rows > QUANTIZED_GEMM_MAX_ROWS && w8a8Fits(w);
}

/**
 * The kernel for `rows` batch rows (`gemv` picks the decode GEMV of int4 and fp8):
 * - fragment layout: marlin up to MARLIN_MAX_ROWS (its loads stream the codes at every batch size,
 *   decoded in registers, so it replaces both classic kernels), dequantize + cuBLAS past it;
 * - row layout: the GEMV for decode rows (it decodes each code once for all rows, but multiplies
 *   on the CUDA cores), the shared-memory-decoding tensor-core GEMM up to its rows, dequantize +
 *   cuBLAS past them or for shapes neither takes.
 */
export function quantizedPath(w: CudaQuantizedTensor, rows: number, gemv: QuantizedGemvKernel = 'auto'): QuantizedPath {
  if (w.layout === 'marlin') return rows <= MARLIN_MAX_ROWS ? 'marlin' : 'dequantize';
  if (!quantizedGemvFits(w) || rows > QUANTIZED_GEMM_MAX_ROWS) return 'dequantize';
  if (rows > QUANTIZED_GEMV_MAX_ROWS) return 'gemm';
  return usesTensorCores(w, rows, gemv) ? 'gemv-mma' : 'gemv';
}
