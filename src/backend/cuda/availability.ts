import { readFileSync } from 'node:fs';
import { CU_DEVICE_ATTRIBUTE, CudaDriver } from './driver-api.ts';
import { archForComputeCapability, kernelCacheDir } from './kernel-cache.ts';
import { type CudaLibrary, type RequiredCudaLibrary, CUDA_SONAMES, loadCudaLibraries, openLibrary, processDiscoveryEnv } from './library-discovery.ts';
import { Nvrtc } from './nvrtc.ts';

/** bf16 tensor-core mma and cp.async need Ampere (8.0) or newer. */
const MIN_COMPUTE_CAPABILITY = 8;

export type CudaAvailability =
  | {
      ok: true;
      deviceCount: number;
      /** Device 0, the one the backend uses by default. */
      deviceName: string;
      computeCapability: string;
      libraries: Record<RequiredCudaLibrary, string>;
    }
  | { ok: false; reason: string };

let cached: CudaAvailability | null = null;

/**
 * Whether the CUDA backend can run here: the four libraries load, the driver initializes and
 * device 0 is new enough. Never throws; `reason` says what is missing (for `--backend auto`).
 */
export function cudaAvailability(): CudaAvailability {
  cached ??= probe();
  return cached;
}

function probe(): CudaAvailability {
  try {
    const libs = loadCudaLibraries(processDiscoveryEnv());
    const driver = new CudaDriver(libs.cuda.handle);
    driver.init();
    const deviceCount = driver.deviceCount();
    if (deviceCount === 0) return { ok: false, reason: 'the CUDA driver reports no GPU' };
    const device = driver.device(0);
    const major = driver.deviceAttribute(device, CU_DEVICE_ATTRIBUTE.computeCapabilityMajor);
    const minor = driver.deviceAttribute(device, CU_DEVICE_ATTRIBUTE.computeCapabilityMinor);
    const deviceName = driver.deviceName(device);
    if (major < MIN_COMPUTE_CAPABILITY) {
      return { ok: false, reason: `${deviceName} has compute capability ${major}.${minor}; the CUDA backend needs ${MIN_COMPUTE_CAPABILITY}.0 or newer` };
    }
    return {
      ok: true,
      deviceCount,
      deviceName,
      computeCapability: `${major}.${minor}`,
      libraries: { cuda: libs.cuda.path, nvrtc: libs.nvrtc.path, cublas: libs.cublas.path, cublasLt: libs.cublasLt.path },
    };
  } catch (err) {
    return { ok: false, reason: (err as Error).message };
  }
}

export interface CudaDoctorReport {
  available: boolean;
  /** Why the backend cannot run, when it cannot. */
  problem: string | null;
  gpu: {
    name: string;
    computeCapability: string;
    arch: string;
    multiprocessors: number;
    memoryFreeBytes: number;
    memoryTotalBytes: number;
  } | null;
  /** CUDA version the driver supports, e.g. "13.0". */
  driverCudaVersion: string | null;
  /** The NVIDIA kernel module's version (e.g. "580.95.05"), from /proc/driver/nvidia/version. */
  driverVersion: string | null;
  nvrtcVersion: string | null;
  /** The file each library was loaded from, or null when none was found (NCCL is needed only for parallel runs, cuSPARSELt only for 2:4 sparse weights). */
  libraries: Record<CudaLibrary, string | null>;
  kernelCacheDir: string;
}

/** Everything `keel doctor` shows about CUDA. Never throws: what could not be read stays null. */
export function doctorReport(): CudaDoctorReport {
  const env = processDiscoveryEnv();
  const availability = cudaAvailability();
  const report: CudaDoctorReport = {
    available: availability.ok,
    problem: availability.ok ? null : availability.reason,
    gpu: null,
    driverCudaVersion: null,
    driverVersion: kernelModuleVersion(),
    nvrtcVersion: null,
    libraries: { cuda: null, nvrtc: null, cublas: null, cublasLt: null, nccl: null, cusparseLt: null },
    kernelCacheDir: kernelCacheDir(),
  };
  for (const library of Object.keys(CUDA_SONAMES) as CudaLibrary[]) {
    const loaded = openLibrary(library, env);
    if ('path' in loaded) report.libraries[library] = loaded.path;
  }
  try {
    const nvrtc = openLibrary('nvrtc', env);
    if ('handle' in nvrtc) {
      const { major, minor } = new Nvrtc(nvrtc.handle).version;
      report.nvrtcVersion = `${major}.${minor}`;
    }
    const cuda = openLibrary('cuda', env);
    if (!('handle' in cuda)) return report;
    const driver = new CudaDriver(cuda.handle);
    driver.init();
    const version = driver.driverVersion();
    report.driverCudaVersion = `${Math.floor(version / 1000)}.${(version % 1000) / 10}`;
    if (driver.deviceCount() === 0) return report;
    const device = driver.device(0);
    const major = driver.deviceAttribute(device, CU_DEVICE_ATTRIBUTE.computeCapabilityMajor);
    const minor = driver.deviceAttribute(device, CU_DEVICE_ATTRIBUTE.computeCapabilityMinor);
    driver.retainPrimaryContext(device);
    const memory = driver.memInfo();
    driver.releasePrimaryContext(device);
    report.gpu = {
      name: driver.deviceName(device),
      computeCapability: `${major}.${minor}`,
      arch: archForComputeCapability(major, minor),
      multiprocessors: driver.deviceAttribute(device, CU_DEVICE_ATTRIBUTE.multiprocessorCount),
      memoryFreeBytes: memory.free,
      memoryTotalBytes: memory.total,
    };
  } catch (err) {
    report.problem ??= (err as Error).message;
  }
  return report;
}

function kernelModuleVersion(): string | null {
  try {
    return /Kernel Module\s+(?:for \S+\s+)?([\d.]+)/.exec(readFileSync('/proc/driver/nvidia/version', 'utf8'))?.[1] ?? null;
  } catch {
    return null;
  }
}
