import type { CudaQuantizedTensor } from '../cuda-tensor.ts';
import { int4GemvMmaFits } from './int4-gemv-mma.ts';
import { marlinProblem } from './marlin-layout.ts';
import { QUANTIZED_GEMM_MAX_ROWS } from './quantized-gemm.ts';
import { QUANTIZED_GEMV_MAX_ROWS, quantizedGemvFits } from './quantized-linear.ts';
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
 * Which GEMV multiplies int4 decode rows: `cuda-cores` (quantized-linear.cu, every format) or
 * `tensor-cores` (int4-gemv-mma.cu, where int4GemvMmaFits; the others stay on the CUDA cores).
 */
export type Int4GemvKernel = 'cuda-cores' | 'tensor-cores';
export const INT4_GEMV_KERNELS: readonly Int4GemvKernel[] = ['cuda-cores', 'tensor-cores'];

/**
 * The kernel for `rows` batch rows (`int4Gemv` picks the int4 GEMV):
 * - fragment layout: marlin up to MARLIN_MAX_ROWS (its loads stream the codes at every batch size,
 *   decoded in registers, so it replaces both classic kernels), dequantize + cuBLAS past it;
 * - row layout: the GEMV for decode rows (it decodes each code once for all rows, but multiplies
 *   on the CUDA cores), the shared-memory-decoding tensor-core GEMM up to its rows, dequantize +
 *   cuBLAS past them or for shapes neither takes.
 */
export function quantizedPath(w: CudaQuantizedTensor, rows: number, int4Gemv: Int4GemvKernel = 'cuda-cores'): QuantizedPath {
  if (w.layout === 'marlin') return rows <= MARLIN_MAX_ROWS ? 'marlin' : 'dequantize';
  if (!quantizedGemvFits(w) || rows > QUANTIZED_GEMM_MAX_ROWS) return 'dequantize';
  if (rows > QUANTIZED_GEMV_MAX_ROWS) return 'gemm';
  return int4Gemv === 'tensor-cores' && int4GemvMmaFits(w) ? 'gemv-mma' : 'gemv';
}
