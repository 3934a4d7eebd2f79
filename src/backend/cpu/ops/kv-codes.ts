import type { KvCacheDtype } from '../../../step/kv-cache-layout.ts';
import type { BatchDescription } from '../../../step/batch.ts';
import { floatToFp8E4m3, fp8E4m3Values } from '../../../tensor/quantized-weight.ts';

/** The typed arrays a pool keeps: float32 values, e4m3 codes, int8 codes, int4 code pairs, or the float32 scales of int8 and int4 (or of fp8 scaled per head). */
export type KvPoolArray = Float32Array | Uint8Array | Int8Array;

/**
 * One pool of a layer's cache (its keys, its values, an MLA layer's rows or a sparse MLA layer's
 * indexer keys): [slots, heads, width] values in the cache's dtype. `auto` keeps float32 values;
 * `fp8_e4m3` e4m3 codes, each x / scale with one scale for the whole pool (given at each call:
 * `AttentionParams.kvScales`), or, in a pool made with `fp8HeadScales` (the indexer keys, as
 * DeepSeek stores them), a float32 scale max|x| / 448 per (slot, head) in `scales`; `int8`
 * symmetric codes with a float32 scale max|x| / 127 per (slot, head) in `scales`; `int4` codes
 * 0..15 two a byte (value 2i in the low nibble of byte i) with a float32 scale (max − min) / 15 and
 * the minimum per (slot, head) in `scales`.
 */
export interface CpuKvPool {
  readonly dtype: KvCacheDtype;
  readonly heads: number;
  readonly width: number;
  readonly codes: KvPoolArray;
  /** int8, and fp8 scaled per head: [slots, heads]; int4 [slots, heads, 2] (scale, minimum); empty otherwise. */
  readonly scales: Float32Array;
}

export function createKvPool(dtype: KvCacheDtype, slots: number, heads: number, width: number, fp8HeadScales = false): CpuKvPool {
  const n = slots * heads * width;
  if (dtype === 'auto') return float32Pool(new Float32Array(n), heads, width);
  if (dtype === 'int4') {
    if (width % 2 !== 0) throw new Error(`an int4 KV pool packs two values a byte, so its rows need an even width, not ${width}`);
    return { dtype, heads, width, codes: new Uint8Array(n / 2), scales: new Float32Array(2 * slots * heads) };
  }
  const codes = dtype === 'fp8_e4m3' ? new Uint8Array(n) : new Int8Array(n);
  return { dtype, heads, width, codes, scales: new Float32Array(dtype === 'int8' || fp8HeadScales ? n / width : 0) };
}

/** The slots a pool holds. */
export function poolSlots(pool: CpuKvPool): number {
  return (pool.codes.length * (pool.dtype === 'int4' ? 2 : 1)) / (pool.heads * pool.width);
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
  return pool.scales.length > 0 ? [pool.codes, pool.scales] : [pool.codes];
}

/**
 * Stores slot `slot`'s heads × width values from src[srcAt ..]. fp8: e4m3(x / tensorScale), ties to
 * even, saturating at ±448; scaled per head, as int8 with e4m3 codes and 448 for 127. int8: per
 * head, scale = max|x| / 127 (1 for a head of zeros) and codes round(x / scale), ties to even.
 * int4: per head, scale = (max − min) / 15 (1 for a head of equal values) and codes
 * round((x − min) / scale), ties to even. Every difference and quotient is rounded to float32
 * first, as the CUDA kernels compute them.
 */
export function storeSlot(pool: CpuKvPool, slot: number, src: Float32Array, srcAt: number, tensorScale: number): void {
  const { heads, width, codes } = pool;
  const at = slot * heads * width;
  if (pool.dtype === 'auto') {
    codes.set(src.subarray(srcAt, srcAt + heads * width), at);
    return;
  }
  if (pool.dtype === 'int4') {
    for (let h = 0; h < heads; h++) storeInt4Head(pool, slot * heads + h, src, srcAt + h * width);
    return;
  }
  const fp8 = pool.dtype === 'fp8_e4m3';
  for (let h = 0; h < heads; h++) {
    const from = srcAt + h * width;
    let scale = tensorScale;
    if (pool.scales.length > 0) {
      let max = 0;
      for (let i = 0; i < width; i++) max = Math.max(max, Math.abs(src[from + i]));
      scale = max === 0 ? 1 : Math.fround(max / (fp8 ? 448 : 127));
      pool.scales[slot * heads + h] = scale;
    }
    for (let i = 0; i < width; i++) {
      const q = Math.fround(src[from + i] / scale);
      codes[at + h * width + i] = fp8 ? floatToFp8E4m3(q) : Math.max(-127, Math.min(127, roundHalfEven(q)));
    }
  }
}

/** One head's int4 codes and its (scale, minimum), `head` counting (slot, head) pairs. */
function storeInt4Head(pool: CpuKvPool, head: number, src: Float32Array, from: number): void {
  const { width, codes, scales } = pool;
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < width; i++) {
    min = Math.min(min, src[from + i]);
    max = Math.max(max, src[from + i]);
  }
  const scale = max === min ? 1 : Math.fround(Math.fround(max - min) / 15);
  scales[2 * head] = scale;
  scales[2 * head + 1] = min;
  const byteAt = (head * width) / 2;
  for (let i = 0; i < width; i += 2) {
    const lo = int4Code(src[from + i], min, scale);
    const hi = int4Code(src[from + i + 1], min, scale);
    codes[byteAt + i / 2] = lo | (hi << 4);
  }
}

function int4Code(x: number, min: number, scale: number): number {
  return Math.min(15, Math.max(0, roundHalfEven(Math.fround(Math.fround(x - min) / scale))));
}

/**
 * Slot `slot`'s heads × width values as float32 into out[outAt ..]: the stored value, or code ×
 * scale rounded to float32 (what the cache holds for that value): the head's own scale where the
 * pool keeps one, else `tensorScale`; int4's code × scale + minimum, rounded once (a fused multiply-add).
 */
export function loadSlot(pool: CpuKvPool, slot: number, tensorScale: number, out: Float32Array, outAt: number): void {
  const { heads, width, codes } = pool;
  const at = slot * heads * width;
  if (pool.dtype === 'auto') {
    out.set(codes.subarray(at, at + heads * width), outAt);
    return;
  }
  if (pool.dtype === 'int4') {
    for (let h = 0; h < heads; h++) {
      const head = slot * heads + h;
      const scale = pool.scales[2 * head];
      const min = pool.scales[2 * head + 1];
      // The product of a 4-bit code and a float32 is exact in float64: one rounding, as fmaf's.
      for (let i = 0; i < width; i++) out[outAt + h * width + i] = Math.fround(int4CodeAt(pool, head, i) * scale + min);
    }
    return;
  }
  const table = pool.dtype === 'fp8_e4m3' ? fp8E4m3Values() : null;
  for (let h = 0; h < heads; h++) {
    const scale = pool.scales.length > 0 ? pool.scales[slot * heads + h] : tensorScale;
    for (let i = 0; i < width; i++) {
      const code = codes[at + h * width + i];
      out[outAt + h * width + i] = (table === null ? code : table[code]) * scale;
    }
  }
}

/** The int4 code of element i of (slot, head) pair `head`. */
export function int4CodeAt(pool: CpuKvPool, head: number, i: number): number {
  const byte = pool.codes[(head * pool.width + i) >> 1];
  return i % 2 === 0 ? byte & 0xf : byte >> 4;
}

function roundHalfEven(v: number): number {
  const r = Math.round(v);
  return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * One sequence's cached rows at a time, as a batch's tokens read them: `rows` holds them and
 * `offset(j)` is where the sequence's j-th row starts there. A float32 pool is read in place
 * (through the block table, by slot); an 8-bit pool's rows that the sequence's tokens can see are
 * dequantized into a scratch, by position, when `select` moves to the sequence.
 */
export class SequenceRows {
  readonly rows: Float32Array;
  private readonly pool: CpuKvPool;
  private readonly batch: BatchDescription;
  private readonly blockSize: number;
  private readonly rowWidth: number;
  private readonly quantized: boolean;
  private tableAt = 0;

  constructor(pool: CpuKvPool, batch: BatchDescription, blockSize: number) {
    this.pool = pool;
    this.batch = batch;
    this.blockSize = blockSize;
    this.rowWidth = pool.heads * pool.width;
    this.quantized = pool.dtype !== 'auto';
    const longest = batch.seqLens.reduce((m, len) => Math.max(m, len), 0);
    this.rows = this.quantized ? new Float32Array(longest * this.rowWidth) : (pool.codes as Float32Array);
  }

  select(seq: number): void {
    const { batch } = this;
    this.tableAt = seq * batch.maxBlocksPerSeq;
    if (!this.quantized) return;
    let visible = 0;
    for (let t = batch.queryStartLoc[seq]; t < batch.queryStartLoc[seq + 1]; t++) {
      visible = Math.max(visible, Math.min(batch.positions[t] + 1, batch.seqLens[seq]));
    }
    for (let j = 0; j < visible; j++) loadSlot(this.pool, this.slotOf(j), 1, this.rows, j * this.rowWidth);
  }

  offset(j: number): number {
    return (this.quantized ? j : this.slotOf(j)) * this.rowWidth;
  }

  private slotOf(j: number): number {
    return this.batch.blockTables[this.tableAt + Math.floor(j / this.blockSize)] * this.blockSize + (j % this.blockSize);
  }
}
