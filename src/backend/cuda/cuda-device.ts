import type { LibraryHandle } from 'koffi';
import { readdirSync, readFileSync } from 'node:fs';
import { KeelError } from '../../errors.ts';
import { Cublas } from './cublas.ts';
import { CublasLt } from './cublas-lt.ts';
import { CusparseLt } from './cusparselt.ts';
import { CU_DEVICE_ATTRIBUTE, CudaDriver, type DevicePtr, type Handle } from './driver-api.ts';
import { HostStaging, type PendingDownload } from './host-staging.ts';
import { archForComputeCapability, KernelCompiler, kernelCacheDir } from './kernel-cache.ts';
import { kernelPrologues } from './kernel-prologue.ts';
import { ProgrammaticLaunchConfig } from './launch-config.ts';
import { LaunchParams, type KernelSignature } from './launch-params.ts';
import { loadCudaLibraries, processDiscoveryEnv } from './library-discovery.ts';
import { Nvrtc, type NvrtcHeader } from './nvrtc.ts';
import { TensorMaps } from './tensor-maps.ts';

/** CUDA's limit on a grid's y and z dimensions: kernels that put rows or tiles there stride past it or refuse. */
export const MAX_GRID_Y = 65535;

export interface CudaDeviceInfo {
  ordinal: number;
  name: string;
  computeCapability: { major: number; minor: number };
  /** The NVRTC target, e.g. sm_90a. */
  arch: string;
  multiprocessorCount: number;
  maxSharedMemoryPerBlockOptin: number;
  /** CUDA version the driver supports, e.g. 13000 for 13.0. */
  driverCudaVersion: number;
}

/** A compiled kernel and the layout of its parameters. */
export interface Kernel {
  readonly name: string;
  readonly handle: Handle;
  readonly signature: KernelSignature;
  /** Whether its body begins with PDL_PROLOGUE() (kernel-prologue.ts): only then may it launch with PDL. */
  readonly programmatic: boolean;
}

export interface CudaDeviceOptions {
  /**
   * Launch kernels that begin with PDL_PROLOGUE() with programmatic stream serialization
   * (programmatic dependent launch: each may start while the kernel before it finishes). Only
   * on compute capability 9.0 and later; elsewhere, and by default, every launch is plain.
   */
  programmaticLaunch?: boolean;
}

const KERNEL_DIR = new URL('./kernels/', import.meta.url);
const DEFAULT_DYNAMIC_SHARED_LIMIT = 48 * 1024;
const CUBLAS_WORKSPACE_BYTES = 32 * 1024 * 1024;
/**
 * Arrival counters kept for kernels whose last CTA finishes their joint result (common.cuh's
 * last_to_arrive): a launch uses one per group of CTAs that meet, far fewer than this.
 */
const ARRIVAL_COUNTERS = 65536;
/** Hopper's griddepcontrol instructions, which PDL_PROLOGUE() compiles to, start with sm_90. */
const PROGRAMMATIC_LAUNCH_MIN_MAJOR = 9;

/**
 * One GPU's primary context, the stream every op is queued on, and the libraries bound to it:
 * NVRTC (kernels compiled on first use, cached on disk), cuBLAS, memory and copies, launches,
 * events for timing, and CUDA-graph capture.
 */
export class CudaDevice {
  readonly driver: CudaDriver;
  readonly nvrtc: Nvrtc;
  readonly cublas: Cublas;
  readonly info: CudaDeviceInfo;
  readonly stream: Handle;
  /** CudaDeviceOptions.programmaticLaunch, where the GPU has it. */
  readonly programmaticLaunch: boolean;
  /** TMA's tensor maps (encoded where the GPU and driver have them: TensorMaps.encodes). */
  readonly tensorMaps: TensorMaps;
  private readonly staging: HostStaging;
  private readonly compiler: KernelCompiler;
  private readonly params = new LaunchParams();
  private readonly launchConfig = new ProgrammaticLaunchConfig();
  private readonly kernels = new Map<string, Kernel>();
  private readonly modules: Handle[] = [];
  private readonly sharedLimits = new Map<Handle, number>();
  private readonly headers: NvrtcHeader[];
  private readonly cublasWorkspace: DevicePtr;
  private readonly arrival: DevicePtr;
  /** Bound on first use: only 2:4 sparse weights need cuSPARSELt (cusparselt.ts). */
  private sparse: CusparseLt | null = null;
  /** Bound on first use: only W8A8, tuned GEMMs and the linear bench call cuBLASLt themselves (cublas-lt.ts). */
  private lt: CublasLt | null = null;
  private readonly cublasLtLibrary: LibraryHandle;
  private readonly timerStart: Handle;
  private readonly timerEnd: Handle;

  constructor(ordinal = 0, options: CudaDeviceOptions = {}) {
    const libs = loadCudaLibraries(processDiscoveryEnv());
    this.driver = new CudaDriver(libs.cuda.handle);
    this.driver.init();
    const device = this.driver.device(ordinal);
    const major = this.driver.deviceAttribute(device, CU_DEVICE_ATTRIBUTE.computeCapabilityMajor);
    const minor = this.driver.deviceAttribute(device, CU_DEVICE_ATTRIBUTE.computeCapabilityMinor);
    this.info = {
      ordinal,
      name: this.driver.deviceName(device),
      computeCapability: { major, minor },
      arch: archForComputeCapability(major, minor),
      multiprocessorCount: this.driver.deviceAttribute(device, CU_DEVICE_ATTRIBUTE.multiprocessorCount),
      maxSharedMemoryPerBlockOptin: this.driver.deviceAttribute(device, CU_DEVICE_ATTRIBUTE.maxSharedMemoryPerBlockOptin),
      driverCudaVersion: this.driver.driverVersion(),
    };
    this.programmaticLaunch = (options.programmaticLaunch ?? false) && major >= PROGRAMMATIC_LAUNCH_MIN_MAJOR;
    this.tensorMaps = new TensorMaps(this.driver, this.info.arch === 'sm_90a');
    this.driver.retainPrimaryContext(device);
    this.stream = this.driver.createStream();
    this.staging = new HostStaging(this.driver, this.stream);
    this.nvrtc = new Nvrtc(libs.nvrtc.handle);
    this.compiler = new KernelCompiler(this.nvrtc, this.info.arch, kernelCacheDir());
    this.headers = readdirSync(KERNEL_DIR)
      .filter((f) => f.endsWith('.cuh'))
      .map((name) => ({ name, source: readFileSync(new URL(name, KERNEL_DIR), 'utf8') }));
    this.cublasWorkspace = this.driver.alloc(CUBLAS_WORKSPACE_BYTES);
    this.arrival = this.driver.alloc(ARRIVAL_COUNTERS * 4);
    this.driver.memsetD8Async(this.arrival, 0, ARRIVAL_COUNTERS * 4, this.stream);
    this.cublas = new Cublas(libs.cublas.handle, this.stream, this.cublasWorkspace, CUBLAS_WORKSPACE_BYTES);
    this.cublasLtLibrary = libs.cublasLt.handle;
    this.timerStart = this.driver.createEvent();
    this.timerEnd = this.driver.createEvent();
  }

  /** cuBLASLt on the device's stream, sharing cuBLAS's workspace (both run in stream order), made on first use. */
  get cublasLt(): CublasLt {
    return (this.lt ??= new CublasLt(this.cublasLtLibrary, this.stream, this.cublasWorkspace, CUBLAS_WORKSPACE_BYTES));
  }

  /** cuSPARSELt on the device's stream, loaded with the first 2:4 sparse weight. */
  get cusparseLt(): CusparseLt {
    return (this.sparse ??= new CusparseLt(this.stream));
  }

  /**
   * The kernel `name` from `kernels/<file>`, compiled for this GPU with `defines` (once per
   * process, and once per machine thanks to the on-disk cache).
   */
  kernel(file: string, name: string, signature: KernelSignature, defines: Readonly<Record<string, number>> = {}): Kernel {
    const key = `${file}:${name}:${JSON.stringify(defines)}`;
    const cached = this.kernels.get(key);
    if (cached) return cached;
    const source = readFileSync(new URL(file, KERNEL_DIR), 'utf8');
    const tag = Object.entries(defines)
      .map(([k, v]) => `${k}${v}`)
      .join('-');
    const cubin = this.compiler.compile(tag ? `${file}-${tag}` : file, source, this.headers, defines);
    const module = this.driver.loadModule(cubin);
    this.modules.push(module);
    const kernel = { name, handle: this.driver.getFunction(module, name), signature, programmatic: kernelPrologues(source).get(name) === true };
    this.kernels.set(key, kernel);
    return kernel;
  }

  /**
   * Queues the kernel on the stream; with programmaticLaunch, a kernel that begins with
   * PDL_PROLOGUE() goes through cuLaunchKernelEx with programmatic stream serialization. The rule
   * relied on (cuda.h): the relaxed dependency exists only from a kernel ("overlap with the previous
   * kernel in the stream, if that kernel requests the overlap"; in a captured graph
   * CU_GRAPH_DEPENDENCY_TYPE_PROGRAMMATIC "may only be used between kernel nodes"), so after a copy
   * or memset the dependency stays a full one; after a kernel that never triggers (cuBLAS's, NCCL's)
   * the dependent launches once all its blocks have run, and the prologue's wait adds the
   * completion and memory flush. Correct either way; the overlap comes between Keel's own kernels.
   */
  launch(kernel: Kernel, grid: readonly number[], block: readonly number[], sharedBytes: number, args: readonly number[]): void {
    this.allowSharedBytes(kernel, sharedBytes);
    const grid3 = [grid[0], grid[1] ?? 1, grid[2] ?? 1];
    const block3 = [block[0], block[1] ?? 1, block[2] ?? 1];
    const params = this.params.pack(kernel.signature, args);
    if (this.programmaticLaunch && kernel.programmatic) {
      this.driver.launchWithConfig(kernel.handle, this.launchConfig.pack(grid3, block3, sharedBytes, this.stream), params);
    } else {
      this.driver.launch(kernel.handle, grid3, block3, sharedBytes, this.stream, params);
    }
  }

  /**
   * Blocks of `threads` threads with `sharedBytes` of dynamic shared memory that are resident on
   * the whole GPU at once (0 if one does not fit): the most a grid whose blocks wait for each
   * other may have, with nothing else running.
   */
  residentBlocks(kernel: Kernel, threads: number, sharedBytes: number): number {
    if (sharedBytes > this.info.maxSharedMemoryPerBlockOptin) return 0;
    this.allowSharedBytes(kernel, sharedBytes);
    return this.driver.residentBlocksPerMultiprocessor(kernel.handle, threads, sharedBytes) * this.info.multiprocessorCount;
  }

  /** Raises the kernel's dynamic shared-memory limit when it needs more than the default 48 KiB. */
  private allowSharedBytes(kernel: Kernel, sharedBytes: number): void {
    if (sharedBytes > this.info.maxSharedMemoryPerBlockOptin) {
      throw new KeelError('backend', `${kernel.name} needs ${sharedBytes} bytes of shared memory; ${this.info.name} allows ${this.info.maxSharedMemoryPerBlockOptin} per block`);
    }
    if (sharedBytes > DEFAULT_DYNAMIC_SHARED_LIMIT && (this.sharedLimits.get(kernel.handle) ?? 0) < sharedBytes) {
      this.driver.setMaxDynamicSharedMemory(kernel.handle, sharedBytes);
      this.sharedLimits.set(kernel.handle, sharedBytes);
    }
  }

  alloc(bytes: number): DevicePtr {
    return this.driver.alloc(bytes);
  }

  /**
   * `count` u32 arrival counters for one launch (common.cuh's last_to_arrive), zero as every
   * launch finds them and leaves them. Every kernel on this device's stream shares them: kernels
   * run one after another there, so no two launches count at once.
   */
  arrivalCounters(count: number): DevicePtr {
    if (count > ARRIVAL_COUNTERS) throw new RangeError(`a launch needs ${count} arrival counters; the device keeps ${ARRIVAL_COUNTERS}`);
    return this.arrival;
  }

  free(ptr: DevicePtr): void {
    this.driver.free(ptr);
  }

  memInfo(): { free: number; total: number } {
    return this.driver.memInfo();
  }

  /** Blocking upload from host memory, ordered after the queued work; for load time (weights, tables), not for steps. */
  uploadSync(dst: DevicePtr, data: ArrayBufferView): void {
    this.driver.copyHtoD(dst, data, data.byteLength, this.stream);
  }

  /** Stream-ordered upload through page-locked staging; returns before the copy runs. */
  uploadAsync(dst: DevicePtr, data: Int32Array): void {
    this.staging.upload(dst, data);
  }

  /** Stream-ordered download of `count` int32 into page-locked memory; `read()` waits for it. */
  downloadAsync(src: DevicePtr, count: number): PendingDownload {
    return this.staging.download(src, count);
  }

  /** Waits for every queued op, then copies `dst.byteLength` bytes from `src`. */
  download(dst: ArrayBufferView, src: DevicePtr): void {
    this.driver.copyDtoHAsync(dst, src, dst.byteLength, this.stream);
    this.driver.synchronizeStream(this.stream);
  }

  copyAsync(dst: DevicePtr, src: DevicePtr, bytes: number): void {
    this.driver.copyDtoDAsync(dst, src, bytes, this.stream);
  }

  fillBytes(dst: DevicePtr, value: number, bytes: number): void {
    this.driver.memsetD8Async(dst, value, bytes, this.stream);
  }

  synchronize(): void {
    this.driver.synchronizeStream(this.stream);
  }

  /** Milliseconds of GPU time that the ops `run` queues take, measured with CUDA events. */
  timeMs(run: () => void): number {
    this.driver.recordEvent(this.timerStart, this.stream);
    run();
    this.driver.recordEvent(this.timerEnd, this.stream);
    this.driver.synchronizeEvent(this.timerEnd);
    return this.driver.elapsedMs(this.timerStart, this.timerEnd);
  }

  /**
   * Records the ops `record` queues (kernels, cuBLAS GEMMs, device copies; no host uploads) into a
   * CUDA graph instead of running them. Replays reuse the recorded addresses and arguments.
   */
  captureGraph(record: () => void): CudaGraph {
    this.driver.beginCapture(this.stream);
    try {
      record();
    } catch (err) {
      // The capture must end either way; its own error (invalidated by the failed call) would hide this one.
      try {
        this.driver.destroyGraph(this.driver.endCapture(this.stream));
      } catch {
        // Nothing was captured worth keeping.
      }
      throw err;
    }
    const graph = this.driver.endCapture(this.stream);
    try {
      return new CudaGraph(this, graph, this.driver.instantiateGraph(graph));
    } catch (err) {
      this.driver.destroyGraph(graph);
      throw err;
    }
  }

  dispose(): void {
    this.driver.synchronizeStream(this.stream);
    this.cublas.dispose();
    this.lt?.dispose();
    this.sparse?.dispose();
    this.staging.dispose();
    this.params.dispose();
    this.tensorMaps.dispose();
    this.launchConfig.dispose();
    for (const module of this.modules) this.driver.unloadModule(module);
    this.driver.free(this.cublasWorkspace);
    this.driver.free(this.arrival);
    this.driver.destroyEvent(this.timerStart);
    this.driver.destroyEvent(this.timerEnd);
    this.driver.destroyStream(this.stream);
  }
}

/** An instantiated CUDA graph replayed on the device's stream. */
export class CudaGraph {
  private readonly device: CudaDevice;
  private readonly graph: Handle;
  private readonly exec: Handle;

  constructor(device: CudaDevice, graph: Handle, exec: Handle) {
    this.device = device;
    this.graph = graph;
    this.exec = exec;
  }

  replay(): void {
    this.device.driver.launchGraph(this.exec, this.device.stream);
  }

  dispose(): void {
    this.device.driver.destroyGraphExec(this.exec);
    this.device.driver.destroyGraph(this.graph);
  }
}
