import type { CudaDevice } from '../cuda-device.ts';
import type { CudaQuantizedTensor } from '../cuda-tensor.ts';
import type { DevicePtr } from '../driver-api.ts';

/** Most activation rows the LLM.int8() GEMV takes; more go through the int8 GEMM. */
export const LLM_INT8_GEMV_MAX_ROWS = 8;
const THREADS = 256;
const MAX_BLOCKS = 8192;
/** Bytes of int32 sums one tensor-core slice of rows may write (the step's rows are cut to fit). */
const SUMS_BYTES = 64 << 20;

/**
 * How LLM.int8()'s int8 products past the GEMV are summed: `dp4a` (llm_int8_gemm_kernel, CUDA
 * cores) or `tensor-cores` (cuBLAS's int8 GEMM into int32 sums, then llm_int8_epilogue_kernel; the
 * output dimension a multiple of 4, else dp4a). The sums are exact either way.
 */
export type LlmInt8Gemm = 'dp4a' | 'tensor-cores';
export const LLM_INT8_GEMMS: readonly LlmInt8Gemm[] = ['dp4a', 'tensor-cores'];

/**
 * Device scratch of one LLM.int8() matmul (step arena memory): `absmax` f32 [rows] (each row's
 * absmax below the threshold), `outlier` i32 [k] (1 on outlier columns; zeroed here before use),
 * `list` i32 [k] (the outlier columns, in order), `count` i32 [1], `xq` i8 [rows, k], `sums` i32
 * [sliceRows, n] (tensor-core sums only; 0 bytes otherwise).
 */
export type LlmInt8Scratch = Record<'absmax' | 'outlier' | 'list' | 'count' | 'xq' | 'sums', DevicePtr>;

/** Rows of one tensor-core slice for n outputs, or 0 where the dp4a GEMM (or the GEMV) runs. */
function tensorCoreSliceRows(rows: number, n: number, gemm: LlmInt8Gemm): number {
  if (gemm !== 'tensor-cores' || rows <= LLM_INT8_GEMV_MAX_ROWS || n % 4 !== 0) return 0;
  return Math.min(rows, Math.max(16, Math.floor(SUMS_BYTES / (4 * n) / 16) * 16));
}

/** Bytes of each scratch buffer for `rows` activation rows of width k and n outputs. */
export function llmInt8ScratchBytes(rows: number, k: number, n: number, gemm: LlmInt8Gemm): Record<keyof LlmInt8Scratch, number> {
  return { absmax: 4 * rows, outlier: 4 * k, list: 4 * k, count: 4, xq: rows * k, sums: 4 * n * tensorCoreSliceRows(rows, n, gemm) };
}

/**
 * out [rows, w.rows] bf16 = LLM.int8()(x [rows, w.cols] bf16, W) (+ bias): the outlier columns,
 * the int8 activations, then the GEMV (rows ≤ LLM_INT8_GEMV_MAX_ROWS) or the GEMM `gemm` picks. w.cols must be
 * a multiple of 16 and w's codes signed.
 */
export function launchLlmInt8Linear(device: CudaDevice, out: DevicePtr, x: DevicePtr, w: CudaQuantizedTensor, bias: DevicePtr, rows: number, s: LlmInt8Scratch, gemm: LlmInt8Gemm): void {
  const k = w.cols;
  const n = w.rows;
  if (k % 16 !== 0) throw new Error(`launchLlmInt8Linear: ${k} input columns are not a multiple of 16`);
  if (w.mixedInt8Threshold === null) throw new Error('launchLlmInt8Linear: the weight has no LLM.int8() outlier threshold');
  device.fillBytes(s.outlier, 0, 4 * k);
  device.launch(device.kernel('llm-int8.cu', 'llm_int8_row_stats_kernel', 'pppif'), [rows], [THREADS], 0, [x, s.absmax, s.outlier, k, w.mixedInt8Threshold]);
  device.launch(device.kernel('llm-int8.cu', 'llm_int8_outlier_list_kernel', 'pppi'), [1], [1024], 0, [s.outlier, s.list, s.count, k]);
  const blocks = Math.min(MAX_BLOCKS, Math.ceil((rows * k) / THREADS));
  device.launch(device.kernel('llm-int8.cu', 'llm_int8_quantize_kernel', 'ppppii'), [blocks], [THREADS], 0, [s.xq, x, s.absmax, s.outlier, rows, k]);
  if (rows <= LLM_INT8_GEMV_MAX_ROWS) {
    const kernel = device.kernel('llm-int8.cu', 'llm_int8_gemv_kernel', 'pppppppppii', { ROWS: rows });
    device.launch(kernel, [Math.ceil(n / 4)], [128], 0, [out, s.xq, x, s.absmax, s.list, s.count, w.codes, w.scales, bias, n, k]);
    return;
  }
  const slice = tensorCoreSliceRows(rows, n, gemm);
  if (slice === 0) {
    const kernel = device.kernel('llm-int8.cu', 'llm_int8_gemm_kernel', 'pppppppppiii');
    device.launch(kernel, [Math.ceil(n / 64), Math.ceil(rows / 64)], [256], 0, [out, s.xq, x, s.absmax, s.list, s.count, w.codes, w.scales, bias, rows, n, k]);
    return;
  }
  const epilogue = device.kernel('llm-int8.cu', 'llm_int8_epilogue_kernel', 'pppppppppiii');
  for (let first = 0; first < rows; first += slice) {
    const m = Math.min(slice, rows - first);
    device.cublas.linearInt8(s.sums, s.xq + first * k, w.codes, m, n, k);
    const blocks = Math.min(MAX_BLOCKS, Math.ceil((m * n) / THREADS));
    device.launch(epilogue, [blocks], [THREADS], 0, [out + 2 * first * n, s.sums, x + 2 * first * k, s.absmax + 4 * first, s.list, s.count, w.codes, w.scales, bias, m, n, k]);
  }
}
