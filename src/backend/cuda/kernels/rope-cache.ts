import type { CudaDevice } from '../cuda-device.ts';
import type { DevicePtr } from '../driver-api.ts';
import type { KvCacheDtype } from '../../../step/kv-cache-layout.ts';
import { kvDtypeDefine, launchKvQuantizeWrite } from './kv-quantize.ts';

export interface RopeCacheWriteArgs {
  qkv: DevicePtr;
  cos: DevicePtr;
  sin: DevicePtr;
  /** [numTokens] row of the tables each token is rotated with. */
  rotaryRows: DevicePtr;
  slotMapping: DevicePtr;
  kPool: DevicePtr;
  vPool: DevicePtr;
  /** The cache's dtype; an 8-bit cache also takes int8's per-(slot, head) scale pools and fp8's per-tensor scales. */
  dtype: KvCacheDtype;
  kScales: DevicePtr;
  vScales: DevicePtr;
  kvScales: { k: number; v: number };
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

/**
 * Rotates query (unless keysOnly) and key heads in place and writes keys and values to their KV
 * slots: in the same kernel for a bf16 cache, by kv_quantize_write_kernel after it for an 8-bit one.
 */
export function launchRopeCacheWrite(device: CudaDevice, a: RopeCacheWriteArgs): void {
  if (a.numTokens === 0) return;
  const partial = a.rotaryDim < a.headDim;
  const kernel = device.kernel('rope-cache.cu', 'rope_cache_write_kernel', 'pppppppiiiii', { PARTIAL_ROTARY: partial ? 1 : 0, KV_DTYPE: kvDtypeDefine(a.dtype) });
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
  if (a.dtype === 'auto') return;
  const rowWidth = (a.numHeads + 2 * a.numKvHeads) * a.headDim;
  const heads = { srcStride: rowWidth, slotMapping: a.slotMapping, numTokens: a.numTokens, heads: a.numKvHeads, width: a.headDim, dtype: a.dtype };
  launchKvQuantizeWrite(device, { ...heads, src: a.qkv + a.numHeads * a.headDim * 2, pool: a.kPool, scales: a.kScales, tensorScale: a.kvScales.k });
  launchKvQuantizeWrite(device, { ...heads, src: a.qkv + (a.numHeads + a.numKvHeads) * a.headDim * 2, pool: a.vPool, scales: a.vScales, tensorScale: a.kvScales.v });
}
