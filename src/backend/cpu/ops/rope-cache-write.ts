import type { AttentionParams } from '../../backend.ts';
import { KeelError } from '../../../errors.ts';
import { poolSlots, storeSlot, type CpuKvPool } from './kv-codes.ts';

/** Rotary tables [maxPositions rows, rotaryDim / 2], HF rotate_half layout over a head's leading rotaryDim dimensions. */
export interface RopeTables {
  maxPositions: number;
  rotaryDim: number;
  cos: Float32Array;
  sin: Float32Array;
}

/**
 * One layer's paged pools, [numBlocks, blockSize, numKvHeads, headDim] each, in the cache's dtype,
 * the per-tensor scales an fp8 cache divides keys and values by (1 otherwise), and the layer's key
 * summaries [numBlocks, numKvHeads, 2, headDim] (key-summaries.ts), or null when it keeps none.
 */
export interface LayerKvPools {
  keys: CpuKvPool;
  values: CpuKvPool;
  kScale: number;
  vScale: number;
  summaries?: Float32Array | null;
}

/**
 * Rotates the leading rope.rotaryDim dimensions of the head at x[at ..] by table row `row`
 * (dimension i pairs with i + rotaryDim / 2; the rest pass through), into out[outAt ..], which
 * may be the head itself. Products are summed in float64 and rounded once as they are stored.
 */
export function rotateHead(x: Float32Array, at: number, rope: RopeTables, row: number, out: Float32Array, outAt: number, headDim: number): void {
  const half = rope.rotaryDim / 2;
  const tableAt = row * half;
  for (let d = 0; d < half; d++) {
    const c = rope.cos[tableAt + d];
    const s = rope.sin[tableAt + d];
    const x1 = x[at + d];
    const x2 = x[at + half + d];
    out[outAt + d] = x1 * c - x2 * s;
    out[outAt + half + d] = x2 * c + x1 * s;
  }
  if (out !== x || outAt !== at) for (let d = rope.rotaryDim; d < headDim; d++) out[outAt + d] = x[at + d];
}

/** Throws unless `row` is a row of the table. */
export function checkRotaryRow(row: number, rope: RopeTables): void {
  if (row < 0 || row >= rope.maxPositions) {
    throw new KeelError('context_overflow', `rotary row ${row} is outside the rotary table's ${rope.maxPositions} rows`);
  }
}

/**
 * For each token t of the packed qkv [numTokens, (numHeads + 2 * numKvHeads) * headDim]: rotate
 * its query heads (unless `keysOnly`: StreamingLLM rotates queries at attention) and key heads in
 * place by table row `rotaryRows[t]` (`rotateHead`), then copy its (rotated) key heads and value
 * heads to KV slot `slotMapping[t]` (slot = block * blockSize + offset, so a slot's heads start at
 * slot * numKvHeads * headDim), quantized to the cache's dtype (kv-codes.ts).
 */
export function ropeAndCacheWrite(
  qkv: Float32Array,
  rotaryRows: Int32Array,
  slotMapping: Int32Array,
  rope: RopeTables,
  pools: LayerKvPools,
  shape: Pick<AttentionParams, 'numHeads' | 'numKvHeads' | 'headDim'>,
  keysOnly = false,
): void {
  const { numHeads, numKvHeads, headDim } = shape;
  const rowWidth = (numHeads + 2 * numKvHeads) * headDim;
  const kvWidth = numKvHeads * headDim;
  const numSlots = poolSlots(pools.keys);
  for (let t = 0; t < rotaryRows.length; t++) {
    const row = rotaryRows[t];
    checkRotaryRow(row, rope);
    const rowAt = t * rowWidth;
    for (let h = keysOnly ? numHeads : 0; h < numHeads + numKvHeads; h++) {
      rotateHead(qkv, rowAt + h * headDim, rope, row, qkv, rowAt + h * headDim, headDim);
    }
    const slot = slotMapping[t];
    if (!(slot >= 0 && slot < numSlots)) throw new RangeError(`ropeAndCacheWrite: slot ${slot} is outside [0, ${numSlots})`);
    const keyAt = rowAt + numHeads * headDim;
    const valueAt = keyAt + kvWidth;
    storeSlot(pools.keys, slot, qkv, keyAt, pools.kScale);
    storeSlot(pools.values, slot, qkv, valueAt, pools.vScale);
  }
}
