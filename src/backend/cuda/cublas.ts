import type { LibraryHandle } from 'koffi';
import { cudaCallError } from './cuda-error.ts';
import type { DeviceDType } from './cuda-tensor.ts';
import type { DevicePtr, Handle, NativeFn } from './driver-api.ts';

const CUBLAS_OP_N = 0;
const CUBLAS_OP_T = 1;
const CUDA_R_16BF = 14;
const CUDA_R_32F = 0;
const CUDA_R_8I = 3;
const CUDA_R_32I = 10;
const CUBLAS_COMPUTE_32F = 68;
const CUBLAS_COMPUTE_32I = 72;
const CUBLAS_GEMM_DEFAULT = -1;
const CUBLAS_SIDE_LEFT = 0;
const CUBLAS_SIDE_RIGHT = 1;
const CUBLAS_FILL_MODE_LOWER = 0;
const CUBLAS_DIAG_NON_UNIT = 0;

/**
 * cuBLAS (libcublas.so.13) on one stream with a caller-owned workspace, so GEMMs can be captured
 * into CUDA graphs (cuBLAS must not allocate during capture).
 */
export class Cublas {
  private readonly fns: Record<string, NativeFn> = {};
  private readonly statusName: NativeFn;
  private readonly handle: Handle;
  private readonly one = new Float32Array([1]);
  private readonly zero = new Float32Array([0]);
  private readonly minusOne = new Float32Array([-1]);
  private readonly oneInt = new Int32Array([1]);
  private readonly zeroInt = new Int32Array([0]);

  constructor(lib: LibraryHandle, stream: Handle, workspace: DevicePtr, workspaceBytes: number) {
    this.statusName = lib.func('const char *cublasGetStatusName(int status)');
    for (const proto of [
      'int cublasCreate_v2(_Out_ void **handle)',
      'int cublasDestroy_v2(void *handle)',
      'int cublasSetStream_v2(void *handle, void *stream)',
      'int cublasSetWorkspace_v2(void *handle, uint64_t workspace, size_t bytes)',
      'int cublasGemmEx(void *handle, int transa, int transb, int m, int n, int k, const void *alpha, uint64_t A, int Atype, int lda, uint64_t B, int Btype, int ldb, const void *beta, uint64_t C, int Ctype, int ldc, int computeType, int algo)',
      'int cublasStrsm_v2(void *handle, int side, int uplo, int trans, int diag, int m, int n, const float *alpha, uint64_t A, int lda, uint64_t B, int ldb)',
      'int cublasSsyrk_v2(void *handle, int uplo, int trans, int n, int k, const float *alpha, uint64_t A, int lda, const float *beta, uint64_t C, int ldc)',
      'int cublasGemmStridedBatchedEx(void *handle, int transa, int transb, int m, int n, int k, const void *alpha, uint64_t A, int Atype, int lda, int64_t strideA, uint64_t B, int Btype, int ldb, int64_t strideB, const void *beta, uint64_t C, int Ctype, int ldc, int64_t strideC, int batchCount, int computeType, int algo)',
    ]) {
      this.fns[/\b(cublas\w+)\(/.exec(proto)![1]] = lib.func(proto);
    }
    const box: unknown[] = [null];
    this.call('cublasCreate_v2', box);
    this.handle = box[0] as Handle;
    this.call('cublasSetStream_v2', this.handle, stream);
    this.call('cublasSetWorkspace_v2', this.handle, workspace, workspaceBytes);
  }

  private call(name: string, ...args: unknown[]): void {
    const code = this.fns[name](...args) as number;
    if (code !== 0) throw cudaCallError(name, code, (this.statusName(code) as string | null) ?? `cublasStatus ${code}`);
  }

  /**
   * Row-major y [m, n] = x [m, k] · wᵀ with w [n, k], x and w bf16, fp32 accumulation, y bf16 (or
   * f32 with `output` 'f32', the sums unrounded).
   * cuBLAS is column-major, where a row-major [r, c] buffer reads as its [c, r] transpose: w reads
   * as wᵀ [k, n] (so op T gives w back), x as xᵀ [k, m], and writing yᵀ [n, m] = w · xᵀ column-major
   * leaves row-major y in memory.
   */
  linearBf16(y: DevicePtr, x: DevicePtr, w: DevicePtr, m: number, n: number, k: number, output: DeviceDType = 'bf16'): void {
    this.call(
      'cublasGemmEx',
      this.handle,
      CUBLAS_OP_T,
      CUBLAS_OP_N,
      n,
      m,
      k,
      this.one,
      w,
      CUDA_R_16BF,
      k,
      x,
      CUDA_R_16BF,
      k,
      this.zero,
      y,
      output === 'f32' ? CUDA_R_32F : CUDA_R_16BF,
      n,
      CUBLAS_COMPUTE_32F,
      CUBLAS_GEMM_DEFAULT,
    );
  }

  /**
   * Per head h < heads, row-major y_h [m, n] = x_h [m, k] · w_hᵀ, all bf16 with fp32 accumulation,
   * in one strided-batched call (column-major cuBLAS computes each y_hᵀ = w_h · x_hᵀ). x_h is the k
   * columns at h · x.headStride of x's rows, x.rowStride apart (head stride 0: one x for every head);
   * y_h the n columns at h · y.headStride of y's rows, y.rowStride apart. w holds the heads'
   * matrices as [heads, n, k] (`rows`) or transposed, [heads, k, n] (`columns`).
   */
  headwiseBf16(
    y: { ptr: DevicePtr; rowStride: number; headStride: number },
    x: { ptr: DevicePtr; rowStride: number; headStride: number },
    w: { ptr: DevicePtr; layout: 'rows' | 'columns' },
    heads: number,
    m: number,
    n: number,
    k: number,
  ): void {
    const rows = w.layout === 'rows';
    this.call(
      'cublasGemmStridedBatchedEx',
      this.handle,
      rows ? CUBLAS_OP_T : CUBLAS_OP_N,
      CUBLAS_OP_N,
      n,
      m,
      k,
      this.one,
      w.ptr,
      CUDA_R_16BF,
      rows ? k : n,
      n * k,
      x.ptr,
      CUDA_R_16BF,
      x.rowStride,
      x.headStride,
      this.zero,
      y.ptr,
      CUDA_R_16BF,
      y.rowStride,
      y.headStride,
      heads,
      CUBLAS_COMPUTE_32F,
      CUBLAS_GEMM_DEFAULT,
    );
  }

  /**
   * Row-major y [m, n] (int32) = x [m, k] · wᵀ with x and w [n, k] signed int8, summed exactly in
   * int32 on the tensor cores (the layout as linearBf16; int8 GEMMs take A transposed and B not,
   * leading dimensions multiples of 4: k and n).
   */
  linearInt8(y: DevicePtr, x: DevicePtr, w: DevicePtr, m: number, n: number, k: number): void {
    this.call('cublasGemmEx', this.handle, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, this.oneInt, w, CUDA_R_8I, k, x, CUDA_R_8I, k, this.zeroInt, y, CUDA_R_32I, n, CUBLAS_COMPUTE_32I, CUBLAS_GEMM_DEFAULT);
  }

  /** Row-major y [m, n] = x [m, k] · wᵀ with w [n, k], all f32 (full fp32 products: no TF32); as linearBf16. */
  linearF32(y: DevicePtr, x: DevicePtr, w: DevicePtr, m: number, n: number, k: number): void {
    this.call('cublasGemmEx', this.handle, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, this.one, w, CUDA_R_32F, k, x, CUDA_R_32F, k, this.zero, y, CUDA_R_32F, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  }

  /**
   * h [cols, cols] f32 += xᵀx for x [rows, cols] row-major (bf16 or f32), fp32 accumulation. x
   * row-major reads column-major as xᵀ [cols, rows], so h = xᵀ · (xᵀ)ᵀ; h is symmetric, the same
   * either way.
   */
  accumulateGram(h: DevicePtr, x: DevicePtr, rows: number, cols: number, dtype: DeviceDType): void {
    const type = dtype === 'f32' ? CUDA_R_32F : CUDA_R_16BF;
    this.call('cublasGemmEx', this.handle, CUBLAS_OP_N, CUBLAS_OP_T, cols, cols, rows, this.one, x, type, cols, x, type, cols, this.one, h, CUDA_R_32F, cols, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  }

  /**
   * Row-major c [m, n] −= a [m, k] · b [k, n], all f32 (full fp32 products: no TF32), each with its
   * own row stride. Column-major this is cᵀ −= bᵀ · aᵀ, each operand read as its transpose.
   */
  subtractProductF32(c: DevicePtr, ldc: number, a: DevicePtr, lda: number, b: DevicePtr, ldb: number, m: number, n: number, k: number): void {
    this.call('cublasGemmEx', this.handle, CUBLAS_OP_N, CUBLAS_OP_N, n, m, k, this.minusOne, b, CUDA_R_32F, ldb, a, CUDA_R_32F, lda, this.one, c, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  }

  /**
   * Column-major, l lower triangular [side × side] (lda): b [m, n] (ldb) ← b · l⁻ᵀ with `right`
   * (side = n), else b ← l⁻¹ · b (side = m). A blocked Cholesky's panel solve, and a triangular
   * inverse (b the identity).
   */
  solveLowerF32(right: boolean, l: DevicePtr, lda: number, b: DevicePtr, ldb: number, m: number, n: number): void {
    this.call('cublasStrsm_v2', this.handle, right ? CUBLAS_SIDE_RIGHT : CUBLAS_SIDE_LEFT, CUBLAS_FILL_MODE_LOWER, right ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_DIAG_NON_UNIT, m, n, this.one, l, lda, b, ldb);
  }

  /** Column-major: the lower triangle of c [n, n] (ldc) −= a · aᵀ, a [n, k] (lda): a blocked Cholesky's trailing update. */
  subtractLowerGramF32(c: DevicePtr, ldc: number, a: DevicePtr, lda: number, n: number, k: number): void {
    this.call('cublasSsyrk_v2', this.handle, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, n, k, this.minusOne, a, lda, this.one, c, ldc);
  }

  dispose(): void {
    this.call('cublasDestroy_v2', this.handle);
  }
}
