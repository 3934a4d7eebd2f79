import { cpus } from 'node:os';
import type { Backend } from '../backend/backend.ts';
import { selectBackend } from '../backend/select-backend.ts';
import type { EngineConfig } from '../config.ts';
import { measureHostCopyBandwidth } from './memory-bandwidth.ts';

/**
 * What a benchmark may find on a backend object beyond the Backend interface. Nothing here is
 * required: each is looked up by feature detection, so a backend gains a figure by adding it.
 */
interface BackendExtras {
  /** Device memory bandwidth in bytes per second, measured by the backend on its own memory. */
  measureMemoryBandwidth?(): number;
  /** The FLOP/s of the backend's own matrix multiply on a large square problem. */
  measureMatmulFlops?(): number;
  /** Bytes per second a copy from pinned host memory to the device runs at. */
  measureHostToDeviceBandwidth?(): number;
  /** The CUDA backend's device: its name, the CUDA version its driver supports, and a wait for its stream. */
  device?: { info?: { name?: unknown; driverCudaVersion?: unknown }; synchronize?(): void };
}

/**
 * Waits until the device has run every op queued so far (the CUDA backend's stream), so that a
 * host clock around it times the device's work; the CPU backend runs each op as it is called.
 */
export function waitForDevice(backend: Backend): void {
  (backend as Backend & BackendExtras).device?.synchronize?.();
}

export type BandwidthSource = 'flag' | 'backend' | 'host-copy';

export interface BackendFacts {
  backend: Backend['name'];
  /** GPU name for CUDA, CPU model for the CPU backend. */
  deviceName: string;
  /** e.g. "13.0": the CUDA version the driver supports; null on the CPU backend. */
  cudaVersion: string | null;
  /**
   * Bytes of one weight element as the backend holds it. The Backend interface does not say, so
   * the KV element size stands in: both backends keep weights and KV in one dtype (CPU float32,
   * CUDA bf16).
   */
  weightElementBytes: number;
  kvElementBytes: number;
  bandwidth: { bytesPerSecond: number; source: BandwidthSource } | null;
  /** Matmul FLOP/s as the backend measures it, when asked for and offered. */
  matmulFlopsPerSecond: number | null;
  /** Host-to-device copy bytes/s as the backend measures it, when asked for and offered (not on the CPU backend). */
  hostToDeviceBytesPerSecond: number | null;
}

/**
 * Opens the backend a run will use, reads its facts and, when `measureBandwidth` is set, the
 * memory bandwidth: `--bandwidth-gbps` if given, else the backend's own measurement if it offers
 * one, else (CPU backend) a host memory copy; a GPU backend without a measurement leaves it
 * unknown. `measureMatmul` adds the backend's matmul FLOP/s, `measureHostToDevice` its pinned
 * host-to-device copy rate. The backend is released before
 * returning, so its memory is the engine's again.
 */
export async function probeBackend(
  choice: EngineConfig['backend'],
  options: { measureBandwidth: boolean; bandwidthGbps?: number; measureMatmul?: boolean; measureHostToDevice?: boolean },
): Promise<BackendFacts> {
  const backend = (await selectBackend(choice)) as Backend & BackendExtras;
  try {
    const info = backend.device?.info;
    const cudaVersion = typeof info?.driverCudaVersion === 'number' ? `${Math.floor(info.driverCudaVersion / 1000)}.${(info.driverCudaVersion % 1000) / 10}` : null;
    return {
      backend: backend.name,
      deviceName: typeof info?.name === 'string' ? info.name : cpus()[0]?.model.trim() ?? 'unknown CPU',
      cudaVersion,
      weightElementBytes: backend.kvElementBytes,
      kvElementBytes: backend.kvElementBytes,
      bandwidth: options.measureBandwidth ? bandwidthOf(backend, options.bandwidthGbps) : null,
      matmulFlopsPerSecond: options.measureMatmul && typeof backend.measureMatmulFlops === 'function' ? backend.measureMatmulFlops() : null,
      hostToDeviceBytesPerSecond: options.measureHostToDevice && typeof backend.measureHostToDeviceBandwidth === 'function' ? backend.measureHostToDeviceBandwidth() : null,
    };
  } finally {
    backend.dispose();
  }
}

function bandwidthOf(backend: Backend & BackendExtras, gbps: number | undefined): BackendFacts['bandwidth'] {
  if (gbps !== undefined) return { bytesPerSecond: gbps * 1e9, source: 'flag' };
  if (typeof backend.measureMemoryBandwidth === 'function') return { bytesPerSecond: backend.measureMemoryBandwidth(), source: 'backend' };
  if (backend.name === 'cpu') return { bytesPerSecond: measureHostCopyBandwidth(), source: 'host-copy' };
  return null;
}
