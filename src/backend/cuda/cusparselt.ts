import type { LibraryHandle } from 'koffi';
import { KeelError } from '../../errors.ts';
import { cudaCallError } from './cuda-error.ts';
import type { DevicePtr, Handle, NativeFn } from './driver-api.ts';
import { openLibrary, processDiscoveryEnv } from './library-discovery.ts';

// cusparse.h / library_types.h / cusparseLt.h enum values.
const CUSPARSE_OPERATION_NON_TRANSPOSE = 0;
const CUSPARSE_ORDER_COL = 1;
const CUSPARSE_ORDER_ROW = 2;
const CUDA_R_16BF = 14;
const CUSPARSE_COMPUTE_32F = 2;
const CUSPARSELT_SPARSITY_50_PERCENT = 0;
const CUSPARSELT_MATMUL_ALG_DEFAULT = 0;
/** Operand addresses are 16-byte aligned (device allocations and step-arena slices are). */
const ALIGNMENT = 16;

/**
 * cuSPARSELt's opaque structs (handle, descriptors, plan) are caller-allocated and passed by
 * address; their size changed between releases (512 bytes in 0.8, 1024 before), so each gets room
 * for any of them.
 */
const OPAQUE_BYTES = 16384;

/** Rows of the dense operand cuSPARSELt multiplies are padded to a multiple of this (its 16-bit minimum). */
export const SPARSE_ROWS_MULTIPLE = 16;
/** A 2:4 weight [n, k] runs on cuSPARSELt when n and k are multiples of this (its structured-matrix minimum). */
export const SPARSE_SHAPE_MULTIPLE = 32;

/** libcusparseLt.so.0's entry points, bound once per process. */
class CusparseLtLibrary {
  readonly fns: Record<string, NativeFn> = {};
  private readonly errorName: NativeFn;

  constructor(lib: LibraryHandle) {
    this.errorName = lib.func('const char *cusparseLtGetErrorName(int status)');
    for (const proto of [
      'int cusparseLtInit(void *handle)',
      'int cusparseLtDestroy(void *handle)',
      'int cusparseLtDenseDescriptorInit(void *handle, void *descr, int64_t rows, int64_t cols, int64_t ld, uint32_t alignment, int valueType, int order)',
      'int cusparseLtStructuredDescriptorInit(void *handle, void *descr, int64_t rows, int64_t cols, int64_t ld, uint32_t alignment, int valueType, int order, int sparsity)',
      'int cusparseLtMatDescriptorDestroy(void *descr)',
      'int cusparseLtMatmulDescriptorInit(void *handle, void *matmul, int opA, int opB, void *matA, void *matB, void *matC, void *matD, int computeType)',
      'int cusparseLtMatmulAlgSelectionInit(void *handle, void *alg, void *matmul, int algorithm)',
      'int cusparseLtMatmulAlgSelectionDestroy(void *alg)',
      'int cusparseLtMatmulPlanInit(void *handle, void *plan, void *matmul, void *alg)',
      'int cusparseLtMatmulPlanDestroy(void *plan)',
      'int cusparseLtMatmulGetWorkspace(void *handle, void *plan, _Out_ size_t *bytes)',
      'int cusparseLtMatmul(void *handle, void *plan, const void *alpha, uint64_t A, uint64_t B, const void *beta, uint64_t C, uint64_t D, uint64_t workspace, void *streams, int numStreams)',
      'int cusparseLtSpMMAPruneCheck2(void *handle, void *sparseDescr, int isSparseA, int op, uint64_t dense, uint64_t valid, void *stream)',
      'int cusparseLtSpMMACompressedSize2(void *handle, void *sparseDescr, _Out_ size_t *compressedBytes, _Out_ size_t *bufferBytes)',
      'int cusparseLtSpMMACompress2(void *handle, void *sparseDescr, int isSparseA, int op, uint64_t dense, uint64_t compressed, uint64_t buffer, void *stream)',
    ]) {
      this.fns[/\b(cusparseLt\w+)\(/.exec(proto)![1]] = lib.func(proto);
    }
  }

  call(name: string, ...args: unknown[]): void {
    const code = this.fns[name](...args) as number;
    if (code !== 0) throw cudaCallError(name, code, (this.errorName(code) as string | null) ?? `cusparseStatus ${code}`);
  }
}

let library: CusparseLtLibrary | null = null;

/** cuSPARSELt, found as the other CUDA libraries are (CUDA_HOME, the toolkit, the loader path, pip's nvidia/cusparselt wheel). */
function cusparseLtLibrary(): CusparseLtLibrary {
  if (library !== null) return library;
  const loaded = openLibrary('cusparseLt', processDiscoveryEnv());
  if ('failures' in loaded) {
    throw new KeelError('backend', `libcusparseLt.so.0 not found (2:4 sparse weights on CUDA need cuSPARSELt: pip install nvidia-cusparselt-cu13, or set CUDA_HOME); tried ${loaded.failures.join('; ')}`);
  }
  return (library = new CusparseLtLibrary(loaded.handle));
}

/** What compression needs of the device: temporary buffers, a fill, a wait, and a small download. */
export interface ScratchDevice {
  alloc(bytes: number): DevicePtr;
  free(ptr: DevicePtr): void;
  fillBytes(dst: DevicePtr, value: number, bytes: number): void;
  synchronize(): void;
  download(dst: Int32Array, src: DevicePtr): void;
}

/** A 2:4 weight compressed by cuSPARSELt: its structured descriptor and the device buffer, with a plan per padded row count. */
export interface CusparseLtWeight {
  n: number;
  k: number;
  descriptor: Uint8Array;
  compressed: DevicePtr;
  compressedBytes: number;
  plans: Map<number, { plan: Uint8Array; workspaceBytes: number }>;
}

/**
 * cuSPARSELt on one stream. A weight W [n, k] (row-major bf16, 2:4 along its input columns) is
 * compressed once at load; `linear` computes row-major Y [m, n] = X [m, k] · Wᵀ as the
 * column-major Yᵀ [n, m] = W · Xᵀ: W is the structured operand A (row-major, op N), X read
 * column-major is Xᵀ [k, m] (operand B), and Yᵀ column-major with ld n is Y row-major. fp32
 * accumulation, bf16 output.
 */
export class CusparseLt {
  private readonly lib: CusparseLtLibrary;
  private readonly handle = new Uint8Array(OPAQUE_BYTES);
  private readonly stream: Handle;
  /** cusparseLtMatmul takes an array of streams; ours is its only element. */
  private readonly streams: BigUint64Array;
  private readonly one = new Float32Array([1]);
  private readonly zero = new Float32Array([0]);
  /** Every descriptor and plan made, destroyed with the handle. */
  private readonly descriptors: Uint8Array[] = [];
  /**
   * Every matmul descriptor made, kept as long as the handle: cuSPARSELt does not say that a plan
   * copies its matmul descriptor (which refers to the matrix descriptors), so one the garbage
   * collector freed could leave the plan reading whatever reuses the memory.
   */
  private readonly matmuls: Uint8Array[] = [];
  private readonly plans: Uint8Array[] = [];
  private readonly algorithms: Uint8Array[] = [];

  constructor(stream: Handle) {
    this.lib = cusparseLtLibrary();
    this.stream = stream;
    this.streams = new BigUint64Array([stream]);
    this.lib.call('cusparseLtInit', this.handle);
  }

  /**
   * Compresses the dense 2:4 weight at `dense` (which stays the caller's) into a new buffer from
   * `alloc`; the temporary buffer compression needs comes from `device` and is freed.
   * Checks on the device that cuSPARSELt sees the 2:4 pattern along W's input columns.
   */
  compress(dense: DevicePtr, n: number, k: number, device: ScratchDevice, alloc: (bytes: number) => DevicePtr): CusparseLtWeight {
    const descriptor = this.descriptor();
    this.lib.call('cusparseLtStructuredDescriptorInit', this.handle, descriptor, n, k, k, ALIGNMENT, CUDA_R_16BF, CUSPARSE_ORDER_ROW, CUSPARSELT_SPARSITY_50_PERCENT);
    const valid = device.alloc(4);
    try {
      // Zeroed first: cuSPARSELt documents 0 as "2:4" and nonzero as "not", not that it writes the
      // flag when the matrix passes, and a fresh allocation may hold an earlier buffer's bytes
      // (the first weight a process loaded passed the check, later ones reported "not 2:4").
      device.fillBytes(valid, 0, 4);
      this.lib.call('cusparseLtSpMMAPruneCheck2', this.handle, descriptor, 1, CUSPARSE_OPERATION_NON_TRANSPOSE, dense, valid, this.stream);
      const flag = new Int32Array(1);
      device.download(flag, valid);
      // cuSPARSELt writes 0 when the matrix is 2:4 sparse.
      if (flag[0] !== 0) throw new KeelError('invalid_model', `cuSPARSELt does not see the weight [${n}, ${k}] as 2:4 sparse along its input columns`);
    } finally {
      device.free(valid);
    }
    const compressedBox: unknown[] = [0];
    const bufferBox: unknown[] = [0];
    this.lib.call('cusparseLtSpMMACompressedSize2', this.handle, descriptor, compressedBox, bufferBox);
    const compressedBytes = Number(compressedBox[0]);
    const bufferBytes = Number(bufferBox[0]);
    const compressed = alloc(compressedBytes);
    const buffer = bufferBytes > 0 ? device.alloc(bufferBytes) : 0;
    try {
      this.lib.call('cusparseLtSpMMACompress2', this.handle, descriptor, 1, CUSPARSE_OPERATION_NON_TRANSPOSE, dense, compressed, buffer, this.stream);
      device.synchronize();
    } finally {
      if (buffer !== 0) device.free(buffer);
    }
    return { n, k, descriptor, compressed, compressedBytes, plans: new Map() };
  }

  /**
   * The plan multiplying `w` by `rows` dense rows (a multiple of SPARSE_ROWS_MULTIPLE), made on
   * first use (host work only: descriptors and the default algorithm, no search) and kept.
   */
  plan(w: CusparseLtWeight, rows: number): { plan: Uint8Array; workspaceBytes: number } {
    const cached = w.plans.get(rows);
    if (cached !== undefined) return cached;
    const b = this.descriptor();
    const c = this.descriptor();
    this.lib.call('cusparseLtDenseDescriptorInit', this.handle, b, w.k, rows, w.k, ALIGNMENT, CUDA_R_16BF, CUSPARSE_ORDER_COL);
    this.lib.call('cusparseLtDenseDescriptorInit', this.handle, c, w.n, rows, w.n, ALIGNMENT, CUDA_R_16BF, CUSPARSE_ORDER_COL);
    const matmul = new Uint8Array(OPAQUE_BYTES);
    this.matmuls.push(matmul);
    this.lib.call('cusparseLtMatmulDescriptorInit', this.handle, matmul, CUSPARSE_OPERATION_NON_TRANSPOSE, CUSPARSE_OPERATION_NON_TRANSPOSE, w.descriptor, b, c, c, CUSPARSE_COMPUTE_32F);
    const algorithm = new Uint8Array(OPAQUE_BYTES);
    this.lib.call('cusparseLtMatmulAlgSelectionInit', this.handle, algorithm, matmul, CUSPARSELT_MATMUL_ALG_DEFAULT);
    this.algorithms.push(algorithm);
    const plan = new Uint8Array(OPAQUE_BYTES);
    this.lib.call('cusparseLtMatmulPlanInit', this.handle, plan, matmul, algorithm);
    this.plans.push(plan);
    const box: unknown[] = [0];
    this.lib.call('cusparseLtMatmulGetWorkspace', this.handle, plan, box);
    const entry = { plan, workspaceBytes: Number(box[0]) };
    w.plans.set(rows, entry);
    return entry;
  }

  /**
   * Row-major y [rows, n] = x [rows, k] · Wᵀ, rows a multiple of SPARSE_ROWS_MULTIPLE (the caller
   * pads), on the stream; `workspace` holds the plan's workspaceBytes.
   */
  linear(y: DevicePtr, x: DevicePtr, w: CusparseLtWeight, rows: number, workspace: DevicePtr): void {
    const { plan } = this.plan(w, rows);
    this.lib.call('cusparseLtMatmul', this.handle, plan, this.one, w.compressed, x, this.zero, y, y, workspace, this.streams, 1);
  }

  dispose(): void {
    for (const plan of this.plans) this.lib.call('cusparseLtMatmulPlanDestroy', plan);
    for (const algorithm of this.algorithms) this.lib.call('cusparseLtMatmulAlgSelectionDestroy', algorithm);
    for (const descriptor of this.descriptors) this.lib.call('cusparseLtMatDescriptorDestroy', descriptor);
    this.lib.call('cusparseLtDestroy', this.handle);
  }

  private descriptor(): Uint8Array {
    const d = new Uint8Array(OPAQUE_BYTES);
    this.descriptors.push(d);
    return d;
  }
}
