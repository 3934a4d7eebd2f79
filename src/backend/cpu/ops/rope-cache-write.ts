import type { AttentionParams } from '../../backend.ts';
import { KeelError } from '../../../errors.ts';

/** Rotary tables [maxPositions rows, rotaryDim / 2], HF rotate_half layout over a head's leading rotaryDim dimensions. */
export interface RopeTables {
  maxPositions: number;
  rotaryDim: number;
  cos: Float32Array;
  sin: Float32Array;
}

/** One layer's paged pools, [numBlocks, blockSize, numKvHeads, headDim] each. */
export interface LayerKvPools {
  keys: Float32Array;
  values: Float32Array;
}

/**
 * For each token t of the packed qkv [numTokens, (numHeads + 2 * numKvHeads) * headDim]: rotate
 * the leading rope.rotaryDim dimensions of its query and key heads in place by table row
 * `rotaryRows[t]` (dimension i pairs with i + rotaryDim / 2; the rest pass through), then copy its
 * (rotated) key heads and value heads to KV slot `slotMapping[t]` (slot = block * blockSize +
 * offset, so a slot's heads start at slot * numKvHeads * headDim).
 */
export function ropeAndCacheWrite(
  qkv: Float32Array,
  rotaryRows: Int32Array,
  slotMapping: Int32Array,
  rope: RopeTables,
  pools: LayerKvPools,
  shape: Pick<AttentionParams, 'numHeads' | 'numKvHeads' | 'headDim'>,
): void {
  const { numHeads, numKvHeads, headDim } = shape;
  const half = rope.rotaryDim / 2;
  const rowWidth = (numHeads + 2 * numKvHeads) * headDim;
  const kvWidth = numKvHeads * headDim;
  const numSlots = pools.keys.length / kvWidth;
  for (let t = 0; t < rotaryRows.length; t++) {
    const row = rotaryRows[t];
    if (row < 0 || row >= rope.maxPositions) {
      throw new KeelError('context_overflow', `rotary row ${row} is outside the rotary table's ${rope.maxPositions} rows`);
    }
    const tableAt = row * half;
    const rowAt = t * rowWidth;
    for (let h = 0; h < numHeads + numKvHeads; h++) {
      const at = rowAt + h * headDim;
      for (let d = 0; d < half; d++) {
        const c = rope.cos[tableAt + d];
        const s = rope.sin[tableAt + d];
        const x1 = qkv[at + d];
        const x2 = qkv[at + half + d];
        qkv[at + d] = x1 * c - x2 * s;
        qkv[at + half + d] = x2 * c + x1 * s;
      }
    }
    const slot = slotMapping[t];
    if (!(slot >= 0 && slot < numSlots)) throw new RangeError(`ropeAndCacheWrite: slot ${slot} is outside [0, ${numSlots})`);
    const keyAt = rowAt + numHeads * headDim;
    const valueAt = keyAt + kvWidth;
    const slotAt = slot * kvWidth;
    for (let i = 0; i < kvWidth; i++) {
      pools.keys[slotAt + i] = qkv[keyAt + i];
      pools.values[slotAt + i] = qkv[valueAt + i];
    }
  }
}
