import type { CudaDevice } from '../cuda-device.ts';
import type { DevicePtr } from '../driver-api.ts';
import type { KvCacheDtype } from '../../../step/kv-cache-layout.ts';
import { kvDtypeDefine, launchKvQuantizeWrite } from './kv-quantize.ts';
import { launchHeadRmsNorm } from './norm.ts';

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
  /** Per-head RMSNorm weights ([headDim] bf16; v 0 for none) to apply before the rotation, or null. */
  norm: { q: DevicePtr; k: DevicePtr; v: DevicePtr; eps: number } | null;
}

const THREADS = 128;
/** Warps (heads) of a rope_norm_cache_write_kernel block. */
const NORM_WARPS = 4;

/**
 * Norms the heads (with `norm`), rotates query (unless keysOnly) and key heads in place and writes
 * keys and values to their KV slots: all in one kernel for a bf16 cache where rope-norm-cache.cu
 * covers the shape, else the norm first (head_rms_norm_kernel); an 8-bit or int4 cache's write
 * follows in kv_quantize_write_kernel.
 */
export function launchRopeCacheWrite(device: CudaDevice, a: RopeCacheWriteArgs): void {
  if (a.numTokens === 0) return;
  if (a.norm !== null && fusesNorm(a)) launchRopeNormCacheWrite(device, a, a.norm);
  else {
    if (a.norm !== null) launchHeadRmsNorm(device, a.qkv, a.norm.q, a.norm.k, a.norm.v === 0 ? null : a.norm.v, a.numTokens, a.numHeads, a.numKvHeads, a.headDim, a.norm.eps);
    launchRope(device, a);
  }
  if (a.dtype === 'auto') return;
  const rowWidth = (a.numHeads + 2 * a.numKvHeads) * a.headDim;
  const heads = { srcStride: rowWidth, slotMapping: a.slotMapping, numTokens: a.numTokens, heads: a.numKvHeads, width: a.headDim, dtype: a.dtype };
  launchKvQuantizeWrite(device, { ...heads, src: a.qkv + a.numHeads * a.headDim * 2, pool: a.kPool, scales: a.kScales, tensorScale: a.kvScales.k });
  launchKvQuantizeWrite(device, { ...heads, src: a.qkv + (a.numHeads + a.numKvHeads) * a.headDim * 2, pool: a.vPool, scales: a.vScales, tensorScale: a.kvScales.v });
}

/** Whether rope-norm-cache.cu takes the norm: query and key heads only, rotated whole, head dims a multiple of 64 up to 512. */
function fusesNorm(a: RopeCacheWriteArgs): boolean {
  return a.norm?.v === 0 && !a.keysOnly && a.rotaryDim === a.headDim && a.headDim % 64 === 0 && a.headDim <= 512;
}

function launchRopeNormCacheWrite(device: CudaDevice, a: RopeCacheWriteArgs, norm: NonNullable<RopeCacheWriteArgs['norm']>): void {
  const kernel = device.kernel('rope-norm-cache.cu', 'rope_norm_cache_write_kernel', 'pppppppppiif', { HEAD_DIM: a.headDim, KV_DTYPE: kvDtypeDefine(a.dtype) });
  const heads = a.numHeads + 2 * a.numKvHeads;
  device.launch(kernel, [a.numTokens, Math.ceil(heads / NORM_WARPS)], [32 * NORM_WARPS], 0, [...leadingArgs(a), norm.q, norm.k, a.numHeads, a.numKvHeads, norm.eps]);
}

/** The arguments both RoPE kernels take first: qkv, the rotary tables and rows, the slots and the pools. */
function leadingArgs(a: RopeCacheWriteArgs): DevicePtr[] {
  return [a.qkv, a.cos, a.sin, a.rotaryRows, a.slotMapping, a.kPool, a.vPool];
}

/** rope_cache_write_kernel: the rotation, and with a bf16 cache the KV write. */
function launchRope(device: CudaDevice, a: RopeCacheWriteArgs): void {
  const partial = a.rotaryDim < a.headDim;
  const kernel = device.kernel('rope-cache.cu', 'rope_cache_write_kernel', 'pppppppiiiii', { PARTIAL_ROTARY: partial ? 1 : 0, KV_DTYPE: kvDtypeDefine(a.dtype) });
  const firstHead = a.keysOnly ? a.numHeads : 0;
  const perToken = Math.max((a.numHeads + a.numKvHeads - firstHead) * (a.rotaryDim / 2), a.numKvHeads * a.headDim);
  device.launch(kernel, [a.numTokens, Math.ceil(perToken / THREADS)], [THREADS], 0, [...leadingArgs(a), a.numHeads, a.numKvHeads, a.headDim, a.rotaryDim, firstHead]);
}
