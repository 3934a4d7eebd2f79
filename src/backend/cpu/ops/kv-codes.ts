import type { KvCacheDtype } from '../../../step/kv-cache-layout.ts';
import { floatToFp8E4m3, fp8E4m3Values } from '../../../tensor/quantized-weight.ts';

/** The typed arrays a pool keeps: float32 values, e4m3 codes, int8 codes, or int8's float32 scales. */
export type KvPoolArray = Float32Array | Uint8Array | Int8Array;

/**
 * One pool of a layer's cache (its keys, its values, or an MLA layer's rows): [slots, heads, width]
 * values in the cache's dtype. `auto` keeps float32 values; `fp8_e4m3` e4m3 codes, each x / scale
 * with one scale for the whole pool (given at each call: `AttentionParams.kvScales`); `int8`
 * symmetric codes with a float32 scale per (slot, head) in `scales`.
 */
export interface CpuKvPool {
  readonly dtype: KvCacheDtype;
  readonly heads: number;
  readonly width: number;
  readonly codes: KvPoolArray;
  /** int8: [slots, heads]; empty otherwise. */
  readonly scales: Float32Array;
}

export function createKvPool(dtype: KvCacheDtype, slots: number, heads: number, width: number): CpuKvPool {
  const n = slots * heads * width;
  if (dtype === 'auto') return float32Pool(new Float32Array(n), heads, width);
  const codes = dtype === 'fp8_e4m3' ? new Uint8Array(n) : new Int8Array(n);
  return { dtype, heads, width, codes, scales: new Float32Array(dtype === 'int8' ? n / width : 0) };
}

/** An `auto` pool over float32 values [slots, heads, width], kept by reference. */
export function float32Pool(values: Float32Array, heads: number, width: number): CpuKvPool {
  return { dtype: 'auto', heads, width, codes: values, scales: new Float32Array(0) };
}

/**
 * The typed arrays of a pool, each indexed by slot first, for moving blocks or slots (copy-on-write,
 * speculative slot copies, swap) whatever the dtype: int8's scales move with their codes.
 */
export function poolArrays(pool: CpuKvPool): KvPoolArray[] {
  return pool.dtype === 'int8' ? [pool.codes, pool.scales] : [pool.codes];
}

/**
 * Stores slot `slot`'s heads × width values from src[srcAt ..]. fp8: e4m3(x / tensorScale), ties to
 * even, saturating at ±448. int8: per head, scale = max|x| / 127 (1 for a head of zeros) and codes
 * round(x / scale), ties to even. Every quotient is rounded to float32 first, as the CUDA kernels
 * compute it.
 */
export function storeSlot(pool: CpuKvPool, slot: number, src: Float32Array, srcAt: number, tensorScale: number): void {
  const { heads, width, codes } = pool;
  const at = slot * heads * width;
  if (pool.dtype === 'auto') {
    codes.set(src.subarray(srcAt, srcAt + heads * width), at);
  } else if (pool.dtype === 'fp8_e4m3') {
    for (let i = 0; i < heads * width; i++) codes[at + i] = floatToFp8E4m3(Math.fround(src[srcAt + i] / tensorScale));
  } else {
    for (let h = 0; h < heads; h++) {
      const from = srcAt + h * width;
      let max = 0;
      for (let i = 0; i < width; i++) max = Math.max(max, Math.abs(src[from + i]));
      const scale = max === 0 ? 1 : Math.fround(max / 127);
      pool.scales[slot * heads + h] = scale;
      for (let i = 0; i < width; i++) codes[at + h * width + i] = Math.max(-127, Math.min(127, roundHalfEven(Math.fround(src[from + i] / scale))));
    }
  }
}

/**
 * Slot `slot`'s heads × width values as float32 into out[outAt ..]: the stored value, or code ×
 * scale rounded to float32 (what the cache holds for that value).
 */
export function loadSlot(pool: CpuKvPool, slot: number, tensorScale: number, out: Float32Array, outAt: number): void {
  const { heads, width, codes } = pool;
  const at = slot * heads * width;
  if (pool.dtype === 'auto') {
    out.set(codes.subarray(at, at + heads * width), outAt);
  } else if (pool.dtype === 'fp8_e4m3') {
    const table = fp8E4m3Values();
    for (let i = 0; i < heads * width; i++) out[outAt + i] = table[codes[at + i]] * tensorScale;
  } else {
    for (let h = 0; h < heads; h++) {
      const scale = pool.scales[slot * heads + h];
      for (let i = 0; i < width; i++) out[outAt + h * width + i] = codes[at + h * width + i] * scale;
    }
  }
}

function roundHalfEven(v: number): number {
  const r = Math.round(v);
  return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
}
