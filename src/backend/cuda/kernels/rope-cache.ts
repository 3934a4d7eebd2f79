import type { CudaDevice } from '../cuda-device.ts';
import type { DevicePtr } from '../driver-api.ts';

export interface RopeCacheWriteArgs {
  qkv: DevicePtr;
  cos: DevicePtr;
  sin: DevicePtr;
  /** [numTokens] row of the tables each token is rotated with. */
  rotaryRows: DevicePtr;
  slotMapping: DevicePtr;
  kPool: DevicePtr;
  vPool: DevicePtr;
  numTokens: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  /** Leading dimensions of each head that rotate (even, at most headDim). */
  rotaryDim: number;
  /** Leave the query heads unrotated (StreamingLLM rotates them at attention). */
  keysOnly: boolean;
}

const THREADS = 128;

/** Rotates query (unless keysOnly) and key heads in place and writes keys and values to their KV slots. */
export function launchRopeCacheWrite(device: CudaDevice, a: RopeCacheWriteArgs): void {
  if (a.numTokens === 0) return;
  const partial = a.rotaryDim < a.headDim;
  const kernel = device.kernel('rope-cache.cu', 'rope_cache_write_kernel', 'pppppppiiiii', { PARTIAL_ROTARY: partial ? 1 : 0 });
  const firstHead = a.keysOnly ? a.numHeads : 0;
  const perToken = Math.max((a.numHeads + a.numKvHeads - firstHead) * (a.rotaryDim / 2), a.numKvHeads * a.headDim);
  device.launch(kernel, [a.numTokens, Math.ceil(perToken / THREADS)], [THREADS], 0, [
    a.qkv,
    a.cos,
    a.sin,
    a.rotaryRows,
    a.slotMapping,
    a.kPool,
    a.vPool,
    a.numHeads,
    a.numKvHeads,
    a.headDim,
    a.rotaryDim,
    firstHead,
  ]);
}
