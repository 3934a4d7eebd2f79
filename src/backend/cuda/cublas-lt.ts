import type { LibraryHandle } from 'koffi';
import { cudaCallError } from './cuda-error.ts';
import type { DevicePtr, Handle, NativeFn } from './driver-api.ts';

// library_types.h, cublas_api.h and cublasLt.h enum values.
const CUDA_R_32F = 0;
const CUDA_R_16BF = 14;
const CUDA_R_8F_E4M3 = 28;
const CUBLAS_COMPUTE_32F = 68;
const CUBLAS_OP_N = 0;
const CUBLAS_OP_T = 1;
const CUBLASLT_MATMUL_DESC_TRANSA = 3;
const CUBLASLT_MATMUL_DESC_TRANSB = 4;
const CUBLASLT_MATMUL_DESC_A_SCALE_POINTER = 17;
const CUBLASLT_MATMUL_DESC_B_SCALE_POINTER = 18;
const CUBLASLT_MATMUL_DESC_A_SCALE_MODE = 31;
const CUBLASLT_MATMUL_DESC_B_SCALE_MODE = 32;
/** A float32 scale per row of op(A) (per output channel) and per column of op(B) (per token). */
const CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F = 3;
const CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES = 1;
/** sizeof(cublasLtMatmulHeuristicResult_t): the algorithm's 64 bytes, then workspaceSize (size_t) and state (int). */
const HEURISTIC_RESULT_BYTES = 96;
const ALGO_BYTES = 64;
const WORKSPACE_SIZE_OFFSET = 64;
const STATE_OFFSET = 72;
/** Candidates asked of the heuristic (FP8 runs the first that fits the workspace; the bench times each bf16 one). */
const HEURISTIC_CANDIDATES = 8;
/** Shapes whose layouts and algorithms are kept (prefill chunks come in many lengths, tuned decode shapes one per graph size and weight); the oldest goes first. */
const MAX_PLANS = 1024;

/** What cublasLtMatmul needs for one (m, n, k): three layouts and the heuristic's algorithms, best first (never empty). */
interface Plan {
  a: Handle;
  b: Handle;
  d: Handle;
  algos: Uint8Array[];
}

/**
 * cuBLASLt (libcublasLt.so) on one stream, sharing cuBLAS's caller-owned workspace (both run in
 * stream order, so one never overwrites the other's), for what plain cuBLAS cannot do: FP8 GEMMs
 * with a scale per output channel and per token (W8A8 with dynamic activation scales), and bf16
 * GEMMs run with each of the heuristic's candidate algorithms (which `keel bench linear` times
 * against cuBLAS's own choice).
 */
export class CublasLt {
  private readonly fns: Record<string, NativeFn> = {};
  private readonly statusName: NativeFn;
  private readonly handle: Handle;
  private readonly stream: Handle;
  private readonly workspace: DevicePtr;
  private readonly workspaceBytes: number;
  /** One descriptor for every FP8 matmul: its scale pointers are set per call. */
  private fp8Desc: Handle | null = null;
  private fp8Unsupported = false;
  private bf16Desc: Handle | null = null;
  /** Per data type and (m, n, k); null where the heuristic has no algorithm. */
  private readonly plans = new Map<string, Plan | null>();
  private readonly one = new Float32Array([1]);
  private readonly zero = new Float32Array([0]);

  constructor(lib: LibraryHandle, stream: Handle, workspace: DevicePtr, workspaceBytes: number) {
    this.statusName = lib.func('const char *cublasLtGetStatusName(int status)');
    for (const proto of [
      'int cublasLtCreate(_Out_ void **handle)',
      'int cublasLtDestroy(void *handle)',
      'int cublasLtMatmulDescCreate(_Out_ void **desc, int computeType, int scaleType)',
      'int cublasLtMatmulDescDestroy(void *desc)',
      'int cublasLtMatmulDescSetAttribute(void *desc, int attr, const void *buf, size_t bytes)',
      'int cublasLtMatrixLayoutCreate(_Out_ void **layout, int type, uint64_t rows, uint64_t cols, int64_t ld)',
      'int cublasLtMatrixLayoutDestroy(void *layout)',
      'int cublasLtMatmulPreferenceCreate(_Out_ void **pref)',
      'int cublasLtMatmulPreferenceDestroy(void *pref)',
      'int cublasLtMatmulPreferenceSetAttribute(void *pref, int attr, const void *buf, size_t bytes)',
      'int cublasLtMatmulAlgoGetHeuristic(void *handle, void *desc, void *a, void *b, void *c, void *d, void *pref, int requested, void *results, _Out_ int *returned)',
      'int cublasLtMatmul(void *handle, void *desc, const void *alpha, uint64_t A, void *Adesc, uint64_t B, void *Bdesc, const void *beta, uint64_t C, void *Cdesc, uint64_t D, void *Ddesc, const void *algo, uint64_t workspace, size_t workspaceBytes, void *stream)',
    ]) {
      this.fns[/\b(cublasLt\w+)\(/.exec(proto)![1]] = lib.func(proto);
    }
    this.handle = this.create('cublasLtCreate');
    this.stream = stream;
    this.workspace = workspace;
    this.workspaceBytes = workspaceBytes;
  }

  private call(name: string, ...args: unknown[]): void {
    const code = this.fns[name](...args) as number;
    if (code !== 0) throw this.failure(name, code);
  }

  private failure(name: string, code: number): Error {
    return cudaCallError(name, code, (this.statusName(code) as string | null) ?? `cublasStatus ${code}`);
  }

  private create(name: string, ...args: unknown[]): Handle {
    const box: unknown[] = [null];
    this.call(name, box, ...args);
    return box[0] as Handle;
  }

  private setAttribute(desc: Handle, attr: number, value: Int32Array | BigUint64Array): void {
    this.call('cublasLtMatmulDescSetAttribute', desc, attr, value, value.byteLength);
  }

  /** A descriptor of y = x · wᵀ as Cublas.linearBf16 lays it out (A = w, op T; B = x, op N), fp32 accumulation and scale. */
  private transposedWeightDescriptor(): Handle {
    const desc = this.create('cublasLtMatmulDescCreate', CUBLAS_COMPUTE_32F, CUDA_R_32F);
    this.setAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, new Int32Array([CUBLAS_OP_T]));
    this.setAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, new Int32Array([CUBLAS_OP_N]));
    return desc;
  }

  /** The FP8 descriptor, or null where this cuBLASLt has no per-row scale mode (older releases refuse the attribute). */
  private fp8Descriptor(): Handle | null {
    if (this.fp8Desc !== null || this.fp8Unsupported) return this.fp8Desc;
    const desc = this.transposedWeightDescriptor();
    for (const attr of [CUBLASLT_MATMUL_DESC_A_SCALE_MODE, CUBLASLT_MATMUL_DESC_B_SCALE_MODE]) {
      const mode = new Int32Array([CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F]);
      if ((this.fns.cublasLtMatmulDescSetAttribute(desc, attr, mode, mode.byteLength) as number) !== 0) {
        this.call('cublasLtMatmulDescDestroy', desc);
        this.fp8Unsupported = true;
        return null;
      }
    }
    return (this.fp8Desc = desc);
  }

  private bf16Descriptor(): Handle {
    return (this.bf16Desc ??= this.transposedWeightDescriptor());
  }

  /**
   * The layouts and the heuristic's algorithms for y [m, n] = x [m, k] · wᵀ with x and w of
   * `type` (e4m3 or bf16), y bf16, made on first use and kept (the heuristic is host work, tens of
   * microseconds). Null when cuBLASLt has no algorithm for the shape on this GPU (FP8 with per-row
   * scales needs Hopper or later, and a recent cuBLAS).
   */
  private plan(type: number, m: number, n: number, k: number): Plan | null {
    const key = `${type}:${m},${n},${k}`;
    const cached = this.plans.get(key);
    if (cached !== undefined) return cached;
    const desc = type === CUDA_R_8F_E4M3 ? this.fp8Descriptor() : this.bf16Descriptor();
    if (desc === null) return null;
    // Column-major, as Cublas.linearBf16: w [n, k] row-major reads as wᵀ [k, n] (op T gives w back), x as xᵀ [k, m], and yᵀ [n, m] is y row-major.
    const a = this.create('cublasLtMatrixLayoutCreate', type, k, n, k);
    const b = this.create('cublasLtMatrixLayoutCreate', type, k, m, k);
    const d = this.create('cublasLtMatrixLayoutCreate', CUDA_R_16BF, n, m, n);
    const pref = this.create('cublasLtMatmulPreferenceCreate');
    const results = new Uint8Array(HEURISTIC_RESULT_BYTES * HEURISTIC_CANDIDATES);
    const returned = [0];
    try {
      this.call('cublasLtMatmulPreferenceSetAttribute', pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, new BigUint64Array([BigInt(this.workspaceBytes)]), 8);
      const code = this.fns.cublasLtMatmulAlgoGetHeuristic(this.handle, desc, a, b, d, d, pref, HEURISTIC_CANDIDATES, results, returned) as number;
      // NOT_SUPPORTED (15): no algorithm for this combination on this GPU; anything else is an error.
      if (code !== 0 && code !== 15) throw this.failure('cublasLtMatmulAlgoGetHeuristic', code);
      if (code === 15) returned[0] = 0;
    } catch (error) {
      this.destroyLayouts({ a, b, d });
      throw error;
    } finally {
      this.call('cublasLtMatmulPreferenceDestroy', pref);
    }
    const view = new DataView(results.buffer);
    const algos: Uint8Array[] = [];
    for (let i = 0; i < returned[0]; i++) {
      const at = i * HEURISTIC_RESULT_BYTES;
      const fits = view.getBigUint64(at + WORKSPACE_SIZE_OFFSET, true) <= BigInt(this.workspaceBytes);
      if (view.getInt32(at + STATE_OFFSET, true) === 0 && fits) algos.push(results.slice(at, at + ALGO_BYTES));
    }
    let plan: Plan | null = null;
    if (algos.length === 0) this.destroyLayouts({ a, b, d });
    else plan = { a, b, d, algos };
    if (this.plans.size >= MAX_PLANS) this.forget(this.plans.keys().next().value!);
    this.plans.set(key, plan);
    return plan;
  }

  private forget(key: string): void {
    const plan = this.plans.get(key);
    if (plan) this.destroyLayouts(plan);
    this.plans.delete(key);
  }

  private destroyLayouts(layouts: Pick<Plan, 'a' | 'b' | 'd'>): void {
    for (const layout of [layouts.a, layouts.b, layouts.d]) this.call('cublasLtMatrixLayoutDestroy', layout);
  }

  /** Whether cuBLASLt multiplies e4m3 operands with per-row scales at this shape on this GPU. */
  fp8RowScaledFits(m: number, n: number, k: number): boolean {
    return this.plan(CUDA_R_8F_E4M3, m, n, k) !== null;
  }

  /**
   * Row-major y [m, n] (bf16) = (xScales ⊗ wScales) ∘ (x [m, k] · wᵀ), x and w e4m3 codes with w
   * [n, k], xScales f32 [m] (one a token), wScales f32 [n] (one an output channel), fp32
   * accumulation. Only where fp8RowScaledFits.
   */
  fp8RowScaled(y: DevicePtr, x: DevicePtr, xScales: DevicePtr, w: DevicePtr, wScales: DevicePtr, m: number, n: number, k: number): void {
    const plan = this.plan(CUDA_R_8F_E4M3, m, n, k);
    if (plan === null) throw new Error(`cuBLASLt has no e4m3 row-scaled GEMM for [${m}, ${k}] · [${n}, ${k}]ᵀ on this GPU`);
    const desc = this.fp8Descriptor()!;
    this.setAttribute(desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, new BigUint64Array([BigInt(wScales)]));
    this.setAttribute(desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, new BigUint64Array([BigInt(xScales)]));
    this.call('cublasLtMatmul', this.handle, desc, this.one, w, plan.a, x, plan.b, this.zero, y, plan.d, y, plan.d, plan.algos[0], this.workspace, this.workspaceBytes, this.stream);
  }

  /** How many candidate algorithms the heuristic offers for a bf16 y [m, n] = x [m, k] · wᵀ (0: none). */
  bf16Candidates(m: number, n: number, k: number): number {
    return this.plan(CUDA_R_16BF, m, n, k)?.algos.length ?? 0;
  }

  /** Row-major y [m, n] = x [m, k] · wᵀ, all bf16 with fp32 accumulation, by the heuristic's candidate `candidate` (0 its first choice). */
  bf16(y: DevicePtr, x: DevicePtr, w: DevicePtr, m: number, n: number, k: number, candidate: number): void {
    const plan = this.plan(CUDA_R_16BF, m, n, k);
    if (plan === null || candidate >= plan.algos.length) throw new Error(`cuBLASLt has no bf16 candidate ${candidate} for [${m}, ${k}] · [${n}, ${k}]ᵀ`);
    this.call('cublasLtMatmul', this.handle, this.bf16Descriptor(), this.one, w, plan.a, x, plan.b, this.zero, y, plan.d, y, plan.d, plan.algos[candidate], this.workspace, this.workspaceBytes, this.stream);
  }

  dispose(): void {
    for (const key of [...this.plans.keys()]) this.forget(key);
    for (const desc of [this.fp8Desc, this.bf16Desc]) if (desc !== null) this.call('cublasLtMatmulDescDestroy', desc);
    this.call('cublasLtDestroy', this.handle);
  }
}
