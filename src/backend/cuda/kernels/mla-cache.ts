import type { CudaDevice } from '../cuda-device.ts';
import type { DevicePtr } from '../driver-api.ts';
import type { QueryTemperature } from '../../backend.ts';
import type { KvCacheDtype } from '../../../step/kv-cache-layout.ts';
import { kvDtypeDefine, launchKvQuantizeWrite } from './kv-quantize.ts';

export interface MlaCacheWriteArgs {
  /** [numTokens, numHeads * (nopeDim + ropeDim)] bf16, rotated in place. */
  q: DevicePtr;
  /** [numTokens, latentDim + ropeDim] bf16, normalized and rotated in place. */
  kv: DevicePtr;
  normWeight: DevicePtr;
  eps: number;
  cos: DevicePtr;
  sin: DevicePtr;
  /** [numTokens] each token's row of the rotary tables (its position unless the model maps it). */
  rotaryRows: DevicePtr;
  /** [numTokens] each token's position, which its query temperature reads. */
  positions: DevicePtr;
  /** Scales each token's queries by its position's temperature after rotating them; null: none. */
  queryTemperature: QueryTemperature | null;
  slotMapping: DevicePtr;
  /** The layer's pool of rows [slots, latentDim + ropeDim]: bf16, or 8-bit codes (`dtype`, fp8 with scale 1). */
  pool: DevicePtr;
  dtype: KvCacheDtype;
  /** int8: the pool's float32 scale per row; 0 otherwise. */
  rowScales: DevicePtr;
  numTokens: number;
  numHeads: number;
  nopeDim: number;
  latentDim: number;
  ropeDim: number;
}

/** Threads per token: enough for the latent's 16-byte chunks or the rotary pairs of every head, at most 256. */
function threadsFor(a: MlaCacheWriteArgs): number {
  const work = Math.max(a.latentDim / 8, (a.numHeads + 1) * (a.ropeDim / 2));
  return Math.min(256, Math.ceil(work / 32) * 32);
}

/**
 * Normalizes and rotates the step's cached rows, rotates the queries' rotary parts, writes the
 * rows to their slots (an 8-bit cache's by kv_quantize_write_kernel after it).
 */
export function launchMlaCacheWrite(device: CudaDevice, a: MlaCacheWriteArgs): void {
  if (a.numTokens === 0) return;
  const kernel = device.kernel('mla-cache.cu', 'mla_rope_cache_write_kernel', 'pppppppppiiiiifffi', { KV_DTYPE: kvDtypeDefine(a.dtype) });
  const temperature = a.queryTemperature;
  device.launch(kernel, [a.numTokens], [threadsFor(a)], 0, [
    a.q,
    a.kv,
    a.normWeight,
    a.cos,
    a.sin,
    a.rotaryRows,
    a.positions,
    a.slotMapping,
    a.pool,
    a.numHeads,
    a.nopeDim + a.ropeDim,
    a.nopeDim,
    a.latentDim,
    a.ropeDim,
    a.eps,
    temperature?.floorScale ?? 0,
    temperature?.attnScale ?? 0,
    temperature?.positionOffset ?? 0,
  ]);
  if (a.dtype === 'auto') return;
  const width = a.latentDim + a.ropeDim;
  launchKvQuantizeWrite(device, { src: a.kv, srcStride: width, slotMapping: a.slotMapping, pool: a.pool, scales: a.rowScales, numTokens: a.numTokens, heads: 1, width, tensorScale: 1, dtype: a.dtype });
}
