// What `keel bench linear` measures, apart from the GPU code that measures it (linear-benchmark.ts),
// so that the command's flags and the result schema read it without loading the CUDA backend.

export const LINEAR_BENCH_FORMATS = ['bf16', 'fp8', 'int8', 'int4', 'nf4', 'llm-int8', 'mxfp4', 'aqlm-2x8', 'aqlm-1x16', '2:4'] as const;
export type LinearBenchFormat = (typeof LINEAR_BENCH_FORMATS)[number];

/** The kernel a figure timed. */
export const LINEAR_BENCH_PATHS = ['cublas', 'keel-bf16', 'gemv', 'gemv-mma', 'gemm', 'dequantize+cublas', 'marlin', 'llm-int8', 'expert-mlp', 'cusparselt', 'keel-2:4', 'w8a8', 'cublaslt-first', 'cublaslt-best'] as const;
export type LinearPath = (typeof LINEAR_BENCH_PATHS)[number];

/** Llama-3.1-8B's projections [out, in]: q/k/v stacked, o, gate/up stacked, down. */
export const LLAMA_8B_SHAPES: readonly [number, number][] = [
  [6144, 4096],
  [4096, 4096],
  [28672, 4096],
  [4096, 14336],
];
export const DEFAULT_BENCH_ROWS: readonly number[] = [1, 8, 16, 64, 256];

/** Why the shape [n, k] cannot be benchmarked in these formats, or null. */
export function linearShapeProblem(n: number, k: number, formats: readonly LinearBenchFormat[]): string | null {
  if (!(Number.isInteger(n) && Number.isInteger(k) && n > 0 && k > 0)) return `shape ${n}x${k} is not two positive integers`;
  if (k % 32 !== 0) return `shape ${n}x${k}: k must be a multiple of 32 (the quantized kernels' 16-byte chunks)`;
  if (formats.includes('2:4') && n % 32 !== 0) return `shape ${n}x${k}: 2:4 runs on cuSPARSELt, which needs n and k in multiples of 32`;
  if ((formats.includes('aqlm-2x8') || formats.includes('aqlm-1x16')) && k % 64 !== 0) return `shape ${n}x${k}: the AQLM GEMV reads 64-column chunks of code words, so k must be a multiple of 64`;
  if (formats.includes('mxfp4') && n % 64 !== 0) return `shape ${n}x${k}: mxfp4 times an expert of width n / 2, so n must be a multiple of 64`;
  return null;
}
