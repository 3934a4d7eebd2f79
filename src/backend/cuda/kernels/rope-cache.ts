import type { CudaDevice } from '../cuda-device.ts';
import type { DevicePtr } from '../driver-api.ts';

export interface RopeCacheWriteArgs {
  qkv: DevicePtr;
  cos: DevicePtr;
  sin: DevicePtr;
  positions: DevicePtr;
  slotMapping: DevicePtr;
  kPool: DevicePtr;
  vPool: DevicePtr;
  numTokens: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
}

const THREADS = 128;

/** Rotates query and key heads in place and writes keys and values to their KV slots. */
export function launchRopeCacheWrite(device: CudaDevice, a: RopeCacheWriteArgs): void {
  if (a.numTokens === 0) return;
  const kernel = device.kernel('rope-cache.cu', 'rope_cache_write_kernel', 'pppppppiii');
  const perToken = Math.max((a.numHeads + a.numKvHeads) * (a.headDim / 2), a.numKvHeads * a.headDim);
  device.launch(kernel, [a.numTokens, Math.ceil(perToken / THREADS)], [THREADS], 0, [a.qkv, a.cos, a.sin, a.positions, a.slotMapping, a.kPool, a.vPool, a.numHeads, a.numKvHeads, a.headDim]);
}
