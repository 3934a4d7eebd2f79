import type { IndexerParams } from '../../backend.ts';
import { KeelError } from '../../../errors.ts';
import type { BatchDescription } from '../../../step/batch.ts';
import { poolSlots, SequenceRows, storeSlot, type CpuKvPool } from './kv-codes.ts';
import { layerNormStatistics } from './norm.ts';
import { rotateHead, type RopeTables } from './rope-cache-write.ts';
import { selectionMargin } from './selection-margin.ts';

/**
 * For each token t: LayerNorm k[t] ([numTokens, headDim]; mean and variance in float64, then
 * × weight + bias), rotate its leading ropeDim and those of each of q's heads by the rotary row
 * rotaryRows[t] (rotate_half pairing i <-> i + ropeDim / 2), in place, and store k[t] in row
 * slotMapping[t] of `pool` ([slots, headDim] in the cache's dtype: an 8-bit key with a scale of
 * its own, max|k| / 127 for int8 codes and max|k| / 448 for e4m3 ones; IndexKeysSpec).
 */
export function indexerRopeAndCacheWrite(
  q: Float32Array,
  k: Float32Array,
  rotaryRows: Int32Array,
  slotMapping: Int32Array,
  normWeight: Float32Array,
  normBias: Float32Array,
  eps: number,
  rope: RopeTables,
  pool: CpuKvPool,
  indexer: IndexerParams,
): void {
  const { numHeads, headDim, ropeDim } = indexer;
  const numSlots = poolSlots(pool);
  if (rope.rotaryDim !== ropeDim) throw new Error(`indexerRopeAndCacheWrite: rotary dim ${rope.rotaryDim} != rope dim ${ropeDim}`);
  for (let t = 0; t < rotaryRows.length; t++) {
    const row = rotaryRows[t];
    if (row < 0 || row >= rope.maxPositions) {
      throw new KeelError('context_overflow', `rotary row ${row} is outside the rotary table's ${rope.maxPositions} rows`);
    }
    const slot = slotMapping[t];
    if (!(slot >= 0 && slot < numSlots)) throw new RangeError(`indexerRopeAndCacheWrite: slot ${slot} is outside [0, ${numSlots})`);
    const keyAt = t * headDim;
    const { mean, inverseStd } = layerNormStatistics(k, keyAt, headDim, eps);
    for (let i = 0; i < headDim; i++) k[keyAt + i] = (k[keyAt + i] - mean) * inverseStd * normWeight[i] + normBias[i];
    rotateHead(k, keyAt, rope, row, k, keyAt, ropeDim);
    for (let h = 0; h < numHeads; h++) rotateHead(q, (t * numHeads + h) * headDim, rope, row, q, (t * numHeads + h) * headDim, ropeDim);
    storeSlot(pool, slot, k, keyAt, 1);
  }
}

/**
 * Each token's selected positions, [numTokens, topK] (IndexerParams): token t at position p of
 * sequence s scores positions j ≤ p by Σ_h weightScale · weights[t, h] · relu(scale · q[t, h] ·
 * key_j), the keys read from `pool` ([slots, headDim], an 8-bit pool's as the values its codes
 * stand for) through s's block table, in float64; it keeps the topK highest (ties to the earlier
 * position), or every j ≤ p when p < topK, listed in increasing position and padded with -1.
 * `onMargin` hears the selectionMargin of each token that chose (p ≥ topK).
 */
export function indexerTopK(
  q: Float32Array,
  weights: Float32Array,
  keyPool: CpuKvPool,
  blockSize: number,
  batch: BatchDescription,
  indexer: IndexerParams,
  out: Int32Array,
  onMargin?: (token: number, margin: number) => void,
): void {
  const { numHeads, headDim, topK, scale, weightScale } = indexer;
  out.fill(-1);
  const longest = batch.seqLens.reduce((m, len) => Math.max(m, len), 0);
  const scores = new Float64Array(longest);
  const order = new Int32Array(longest);
  const keys = new SequenceRows(keyPool, batch, blockSize);
  const pool = keys.rows;
  for (let s = 0; s < batch.numSeqs; s++) {
    keys.select(s);
    for (let t = batch.queryStartLoc[s]; t < batch.queryStartLoc[s + 1]; t++) {
      const position = batch.positions[t];
      if (position >= batch.seqLens[s]) {
        throw new RangeError(`indexerTopK: token ${t} at position ${position} is past its sequence's ${batch.seqLens[s]} cached tokens`);
      }
      const visible = position + 1;
      const outAt = t * topK;
      if (visible <= topK) {
        for (let j = 0; j < visible; j++) out[outAt + j] = j;
        continue;
      }
      for (let j = 0; j < visible; j++) {
        const keyAt = keys.offset(j);
        let score = 0;
        for (let h = 0; h < numHeads; h++) {
          const queryAt = (t * numHeads + h) * headDim;
          let dot = 0;
          for (let d = 0; d < headDim; d++) dot += q[queryAt + d] * pool[keyAt + d];
          score += weightScale * weights[t * numHeads + h] * Math.max(0, scale * dot);
        }
        scores[j] = score;
        order[j] = j;
      }
      onMargin?.(t, selectionMargin(scores.subarray(0, visible), topK));
      const chosen = Array.from(order.subarray(0, visible))
        .sort((a, b) => scores[b] - scores[a] || a - b)
        .slice(0, topK)
        .sort((a, b) => a - b);
      out.set(chosen, outAt);
    }
  }
}
