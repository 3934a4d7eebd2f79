import type { CudaDevice } from '../cuda-device.ts';
import type { DevicePtr } from '../driver-api.ts';
import type { KvCacheDtype } from '../../../step/kv-cache-layout.ts';

/** The KV_DTYPE define of every kernel that reads or writes the cache. */
export function kvDtypeDefine(dtype: KvCacheDtype): number {
  return { auto: 0, fp8_e4m3: 1, int8: 2, int4: 3 }[dtype];
}

export interface KvQuantizeWriteArgs {
  /** bf16 rows [numTokens, srcStride]; head h of a row starts at h * width. */
  src: DevicePtr;
  srcStride: number;
  slotMapping: DevicePtr;
  /** Codes [slots, heads, width] (int4: two a byte). */
  pool: DevicePtr;
  /** int8: float32 [slots, heads]; int4: float32 [slots, heads, 2], each (scale, minimum); unread for fp8. */
  scales: DevicePtr;
  numTokens: number;
  heads: number;
  width: number;
  /** fp8: what each value is divided by before encoding; unread for int8 and int4. */
  tensorScale: number;
  dtype: Exclude<KvCacheDtype, 'auto'>;
}

/** Quantizes `heads` heads of every token of the step into their slots of an 8-bit or int4 pool. */
export function launchKvQuantizeWrite(device: CudaDevice, a: KvQuantizeWriteArgs): void {
  if (a.numTokens === 0) return;
  const kernel = device.kernel('kv-quantize.cu', 'kv_quantize_write_kernel', 'pipppiif', { KV_DTYPE: kvDtypeDefine(a.dtype) });
  device.launch(kernel, [a.numTokens, a.heads], [32], 0, [a.src, a.srcStride, a.slotMapping, a.pool, a.scales, a.heads, a.width, a.tensorScale]);
}
