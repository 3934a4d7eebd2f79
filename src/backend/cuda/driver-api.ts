import type { LibraryHandle } from 'koffi';
import { cudaCallError } from './cuda-error.ts';

/** A device address (CUdeviceptr). Addresses stay far below 2^53, so a number holds them exactly. */
export type DevicePtr = number;
/** An opaque driver handle (context, stream, event, module, function, graph) as koffi returns it. */
export type Handle = bigint;

export const CU_DEVICE_ATTRIBUTE = {
  multiprocessorCount: 16,
  computeCapabilityMajor: 75,
  computeCapabilityMinor: 76,
  maxSharedMemoryPerBlockOptin: 97,
} as const;

const CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8;
const CU_STREAM_NON_BLOCKING = 1;
const CU_EVENT_DISABLE_TIMING = 2;
const CU_STREAM_CAPTURE_MODE_THREAD_LOCAL = 1;
// cuda.h's CUtensorMap enums, the values cuTensorMapEncodeTiled takes here.
const CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 = 9;
const CU_TENSOR_MAP_INTERLEAVE_NONE = 0;
const CU_TENSOR_MAP_SWIZZLE_128B = 3;
const CU_TENSOR_MAP_L2_PROMOTION_L2_256B = 3;
const CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE = 0;

/** A koffi-bound C function. */
export type NativeFn = (...args: unknown[]) => unknown;

/**
 * The CUDA driver API (libcuda.so.1) through koffi. Every method checks the CUresult and throws
 * an Error naming the call and the code's name (cuGetErrorName) on failure.
 */
export class CudaDriver {
  private readonly fns: Record<string, NativeFn> = {};
  private readonly getErrorName: NativeFn;
  readonly lib: LibraryHandle;

  constructor(lib: LibraryHandle) {
    this.lib = lib;
    this.getErrorName = lib.func('int cuGetErrorName(int error, _Out_ const char **str)');
    const declare = (proto: string) => {
      const name = /\b(cu\w+)\(/.exec(proto)![1];
      this.fns[name] = lib.func(proto);
    };
    [
      'int cuInit(unsigned int flags)',
      'int cuDriverGetVersion(_Out_ int *version)',
      'int cuDeviceGetCount(_Out_ int *count)',
      'int cuDeviceGet(_Out_ int *device, int ordinal)',
      'int cuDeviceGetName(_Out_ uint8_t *name, int len, int device)',
      'int cuDeviceGetAttribute(_Out_ int *value, int attribute, int device)',
      'int cuDevicePrimaryCtxRetain(_Out_ void **ctx, int device)',
      'int cuDevicePrimaryCtxRelease_v2(int device)',
      'int cuCtxSetCurrent(void *ctx)',
      'int cuMemGetInfo_v2(_Out_ size_t *free, _Out_ size_t *total)',
      'int cuMemAlloc_v2(_Out_ uint64_t *dptr, size_t bytes)',
      'int cuMemFree_v2(uint64_t dptr)',
      'int cuMemAllocHost_v2(_Out_ void **pp, size_t bytes)',
      'int cuMemFreeHost(void *p)',
      'int cuMemHostAlloc(_Out_ uint64_t *pp, size_t bytes, unsigned int flags)',
      'int cuMemcpyHtoDAsync_v2(uint64_t dst, const void *src, size_t bytes, void *stream)',
      'int cuMemcpyDtoHAsync_v2(void *dst, uint64_t src, size_t bytes, void *stream)',
      'int cuMemcpyDtoDAsync_v2(uint64_t dst, uint64_t src, size_t bytes, void *stream)',
      'int cuMemsetD8Async(uint64_t dst, uint8_t value, size_t count, void *stream)',
      'int cuModuleLoadData(_Out_ void **module, const void *image)',
      'int cuModuleUnload(void *module)',
      'int cuModuleGetFunction(_Out_ void **fn, void *module, const char *name)',
      'int cuFuncSetAttribute(void *fn, int attribute, int value)',
      'int cuOccupancyMaxActiveBlocksPerMultiprocessor(_Out_ int *blocks, void *fn, int blockSize, size_t dynamicSmemBytes)',
      'int cuLaunchKernel(void *fn, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx, unsigned int by, unsigned int bz, unsigned int smem, void *stream, void *params, void *extra)',
      // The config by address: launch-config.ts keeps one CUlaunchConfig in native memory.
      'int cuLaunchKernelEx(void *config, void *fn, void *params, void *extra)',
      'int cuStreamCreate(_Out_ void **stream, unsigned int flags)',
      'int cuStreamDestroy_v2(void *stream)',
      'int cuStreamSynchronize(void *stream)',
      'int cuEventCreate(_Out_ void **event, unsigned int flags)',
      'int cuEventDestroy_v2(void *event)',
      'int cuEventRecord(void *event, void *stream)',
      'int cuEventSynchronize(void *event)',
      'int cuStreamWaitEvent(void *stream, void *event, unsigned int flags)',
      'int cuStreamBeginCapture_v2(void *stream, int mode)',
      'int cuStreamEndCapture(void *stream, _Out_ void **graph)',
      'int cuGraphInstantiateWithFlags(_Out_ void **exec, void *graph, uint64_t flags)',
      'int cuGraphLaunch(void *exec, void *stream)',
      'int cuGraphExecDestroy(void *exec)',
      'int cuGraphDestroy(void *graph)',
    ].forEach(declare);
    // Tensor maps came with CUDA 12.0; without them TMA is off (hasTensorMaps). The map by address
    // (tensor-maps.ts keeps them in native memory), the tensor's by number.
    try {
      declare(
        'int cuTensorMapEncodeTiled(uint64_t map, int dtype, uint32_t rank, uint64_t address, const uint64_t *dims, const uint64_t *strides, const uint32_t *box, const uint32_t *elementStrides, int interleave, int swizzle, int l2Promotion, int oobFill)',
      );
    } catch {
      // An older driver: the kernels copy their tiles themselves.
    }
    // The swap space's page-locked memory by address, so that copies can start inside it.
    this.fns.cuMemFreeHostAddress = lib.func('cuMemFreeHost', 'int', ['uint64_t']);
    this.fns.cuMemcpyDtoHAsyncToAddress = lib.func('cuMemcpyDtoHAsync_v2', 'int', ['uint64_t', 'uint64_t', 'size_t', 'void *']);
    this.fns.cuMemcpyHtoDAsyncFromAddress = lib.func('cuMemcpyHtoDAsync_v2', 'int', ['uint64_t', 'uint64_t', 'size_t', 'void *']);
    // CUDA 12.8 added cuEventElapsedTime_v2; older drivers export only the original.
    try {
      this.fns.cuEventElapsedTime = lib.func('int cuEventElapsedTime_v2(_Out_ float *ms, void *start, void *end)');
    } catch {
      this.fns.cuEventElapsedTime = lib.func('int cuEventElapsedTime(_Out_ float *ms, void *start, void *end)');
    }
  }

  /** The driver's name for a CUresult, e.g. CUDA_ERROR_OUT_OF_MEMORY. */
  errorName(code: number): string {
    const out: (string | null)[] = [null];
    return this.getErrorName(code, out) === 0 && out[0] ? out[0] : `CUresult ${code}`;
  }

  private call(name: string, ...args: unknown[]): void {
    const code = this.fns[name](...args) as number;
    if (code !== 0) throw cudaCallError(name, code, this.errorName(code));
  }

  /** Calls `name` with an output pointer as its first parameter and returns what was written there. */
  private out<T>(name: string, ...args: unknown[]): T {
    const box: unknown[] = [null];
    this.call(name, box, ...args);
    return box[0] as T;
  }

  init(): void {
    this.call('cuInit', 0);
  }

  /** CUDA version the driver supports, e.g. 13000 for 13.0. */
  driverVersion(): number {
    return this.out<number>('cuDriverGetVersion');
  }

  deviceCount(): number {
    return this.out<number>('cuDeviceGetCount');
  }

  device(ordinal: number): number {
    return this.out<number>('cuDeviceGet', ordinal);
  }

  deviceName(device: number): string {
    const buf = Buffer.alloc(256);
    this.call('cuDeviceGetName', buf, buf.length, device);
    return buf.toString('utf8', 0, buf.indexOf(0));
  }

  deviceAttribute(device: number, attribute: number): number {
    return this.out<number>('cuDeviceGetAttribute', attribute, device);
  }

  /** Retains the device's primary context (the one cuBLAS and the runtime API share) and makes it current. */
  retainPrimaryContext(device: number): Handle {
    const ctx = this.out<Handle>('cuDevicePrimaryCtxRetain', device);
    this.call('cuCtxSetCurrent', ctx);
    return ctx;
  }

  releasePrimaryContext(device: number): void {
    this.call('cuDevicePrimaryCtxRelease_v2', device);
  }

  memInfo(): { free: number; total: number } {
    const free: unknown[] = [0];
    const total: unknown[] = [0];
    this.call('cuMemGetInfo_v2', free, total);
    return { free: Number(free[0]), total: Number(total[0]) };
  }

  alloc(bytes: number): DevicePtr {
    return Number(this.out<number | bigint>('cuMemAlloc_v2', Math.max(bytes, 1)));
  }

  free(ptr: DevicePtr): void {
    this.call('cuMemFree_v2', ptr);
  }

  /** Page-locked host memory: the only kind an async host-to-device copy can read without a sync. */
  allocHost(bytes: number): Handle {
    return this.out<Handle>('cuMemAllocHost_v2', bytes);
  }

  freeHost(ptr: Handle): void {
    this.call('cuMemFreeHost', ptr);
  }

  /**
   * Page-locked host memory of any size (cuMemHostAlloc, no flags: one context uses it), for the
   * KV swap space; returns its address, which stays far below 2^53.
   */
  allocHostAddress(bytes: number): number {
    return Number(this.out<number | bigint>('cuMemHostAlloc', Math.max(bytes, 1), 0));
  }

  freeHostAddress(address: number): void {
    this.call('cuMemFreeHostAddress', address);
  }

  /** Async device-to-host copy into page-locked memory at `address` (from allocHostAddress). */
  copyDtoHAsyncToAddress(address: number, src: DevicePtr, bytes: number, stream: Handle): void {
    this.call('cuMemcpyDtoHAsyncToAddress', address, src, bytes, stream);
  }

  /** Async host-to-device copy from page-locked memory at `address` (from allocHostAddress). */
  copyHtoDAsyncFromAddress(dst: DevicePtr, address: number, bytes: number, stream: Handle): void {
    this.call('cuMemcpyHtoDAsyncFromAddress', dst, address, bytes, stream);
  }

  /**
   * Copy from a host array, queued on `stream` and waited for (load time only). Not cuMemcpyHtoD:
   * that runs on the legacy stream, which the non-blocking compute stream does not wait for, and
   * it may return before its DMA from pageable memory lands, so a kernel queued next could read
   * the old bytes (seen on a shared GPU as random wrong results).
   */
  copyHtoD(dst: DevicePtr, src: ArrayBufferView, bytes: number, stream: Handle): void {
    this.call('cuMemcpyHtoDAsync_v2', dst, src, bytes, stream);
    this.synchronizeStream(stream);
  }

  /** Async copy from page-locked host memory at `src` (a pointer from allocHost). */
  copyHtoDAsync(dst: DevicePtr, src: Handle, bytes: number, stream: Handle): void {
    this.call('cuMemcpyHtoDAsync_v2', dst, src, bytes, stream);
  }

  /** Device-to-host copy into a JS array; the caller synchronizes the stream before reading it. */
  copyDtoHAsync(dst: ArrayBufferView, src: DevicePtr, bytes: number, stream: Handle): void {
    this.call('cuMemcpyDtoHAsync_v2', dst, src, bytes, stream);
  }

  copyDtoDAsync(dst: DevicePtr, src: DevicePtr, bytes: number, stream: Handle): void {
    this.call('cuMemcpyDtoDAsync_v2', dst, src, bytes, stream);
  }

  memsetD8Async(dst: DevicePtr, value: number, bytes: number, stream: Handle): void {
    this.call('cuMemsetD8Async', dst, value, bytes, stream);
  }

  loadModule(image: Uint8Array): Handle {
    return this.out<Handle>('cuModuleLoadData', image);
  }

  unloadModule(module: Handle): void {
    this.call('cuModuleUnload', module);
  }

  getFunction(module: Handle, name: string): Handle {
    return this.out<Handle>('cuModuleGetFunction', module, name);
  }

  setMaxDynamicSharedMemory(fn: Handle, bytes: number): void {
    this.call('cuFuncSetAttribute', fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes);
  }

  /** How many blocks of `blockSize` threads and `sharedBytes` of dynamic shared memory one multiprocessor holds at once. */
  residentBlocksPerMultiprocessor(fn: Handle, blockSize: number, sharedBytes: number): number {
    return this.out<number>('cuOccupancyMaxActiveBlocksPerMultiprocessor', fn, blockSize, sharedBytes);
  }

  /** `params` points at an array of pointers to each argument's value (cuLaunchKernel's kernelParams). */
  launch(fn: Handle, grid: readonly number[], block: readonly number[], sharedBytes: number, stream: Handle, params: Handle): void {
    this.call('cuLaunchKernel', fn, grid[0], grid[1], grid[2], block[0], block[1], block[2], sharedBytes, stream, params, null);
  }

  /** cuLaunchKernelEx: `config` points at a CUlaunchConfig (launch-config.ts), `params` as for launch(). */
  launchWithConfig(fn: Handle, config: Handle, params: Handle): void {
    this.call('cuLaunchKernelEx', config, fn, params, null);
  }

  /** A stream that does not synchronize with the legacy default stream (required for graph capture). */
  createStream(): Handle {
    return this.out<Handle>('cuStreamCreate', CU_STREAM_NON_BLOCKING);
  }

  destroyStream(stream: Handle): void {
    this.call('cuStreamDestroy_v2', stream);
  }

  synchronizeStream(stream: Handle): void {
    this.call('cuStreamSynchronize', stream);
  }

  /** `timing: false` makes a lighter event that can only order and wait (CU_EVENT_DISABLE_TIMING). */
  createEvent(timing = true): Handle {
    return this.out<Handle>('cuEventCreate', timing ? 0 : CU_EVENT_DISABLE_TIMING);
  }

  destroyEvent(event: Handle): void {
    this.call('cuEventDestroy_v2', event);
  }

  recordEvent(event: Handle, stream: Handle): void {
    this.call('cuEventRecord', event, stream);
  }

  synchronizeEvent(event: Handle): void {
    this.call('cuEventSynchronize', event);
  }

  /** Work queued on `stream` after this waits for `event` on the device; the host does not wait. */
  streamWaitEvent(stream: Handle, event: Handle): void {
    this.call('cuStreamWaitEvent', stream, event, 0);
  }

  elapsedMs(start: Handle, end: Handle): number {
    return this.out<number>('cuEventElapsedTime', start, end);
  }

  beginCapture(stream: Handle): void {
    this.call('cuStreamBeginCapture_v2', stream, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL);
  }

  endCapture(stream: Handle): Handle {
    const graph: unknown[] = [null];
    this.call('cuStreamEndCapture', stream, graph);
    return graph[0] as Handle;
  }

  instantiateGraph(graph: Handle): Handle {
    return this.out<Handle>('cuGraphInstantiateWithFlags', graph, 0);
  }

  launchGraph(exec: Handle, stream: Handle): void {
    this.call('cuGraphLaunch', exec, stream);
  }

  destroyGraphExec(exec: Handle): void {
    this.call('cuGraphExecDestroy', exec);
  }

  destroyGraph(graph: Handle): void {
    this.call('cuGraphDestroy', graph);
  }

  /** Whether the driver encodes tensor maps (CUDA 12.0 and later), which TMA loads need. */
  get hasTensorMaps(): boolean {
    return 'cuTensorMapEncodeTiled' in this.fns;
  }

  /**
   * Writes a tiled tensor map (cuTensorMapEncodeTiled) at `map` (128 bytes, 64-byte aligned): a
   * bf16 tensor at `address`, its dims and box innermost first, byte strides of the outer dims,
   * every element of the box loaded, the 128-byte swizzle, L2 lines fetched 256 bytes at a time.
   */
  encodeTensorMapBf16(map: bigint, address: DevicePtr, dims: readonly number[], strides: readonly number[], box: readonly number[]): void {
    const rank = dims.length;
    this.call(
      'cuTensorMapEncodeTiled',
      map,
      CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
      rank,
      address,
      BigUint64Array.from(dims, BigInt),
      BigUint64Array.from(strides, BigInt),
      Uint32Array.from(box),
      new Uint32Array(rank).fill(1),
      CU_TENSOR_MAP_INTERLEAVE_NONE,
      CU_TENSOR_MAP_SWIZZLE_128B,
      CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
      CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
    );
  }
}
