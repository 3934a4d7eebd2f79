import { queryTemperatureFactor, type MlaParams } from '../../backend.ts';
import { KeelError } from '../../../errors.ts';
import type { BatchDescription } from '../../../step/batch.ts';
import { poolSlots, SequenceRows, storeSlot, type CpuKvPool } from './kv-codes.ts';
import { rotateHead, type RopeTables } from './rope-cache-write.ts';

/**
 * out[r, h * outDim + o] = Σ_i x[r, h * width + i] · w[h, o, i] over i < inDim: each head's leading
 * inDim values of x times its own [outDim, inDim] matrix. Sums in float64, rounded once.
 */
export function headwiseLinear(
  x: Float32Array,
  rows: number,
  heads: number,
  width: number,
  w: Float32Array,
  outDim: number,
  inDim: number,
  out: Float32Array,
): void {
  for (let r = 0; r < rows; r++) {
    for (let h = 0; h < heads; h++) {
      const xAt = r * heads * width + h * width;
      const outAt = r * heads * outDim + h * outDim;
      for (let o = 0; o < outDim; o++) {
        const wAt = (h * outDim + o) * inDim;
        let sum = 0;
        for (let i = 0; i < inDim; i++) sum += x[xAt + i] * w[wAt + i];
        out[outAt + o] = sum;
      }
    }
  }
}

/**
 * For each token t: RMS-normalize the latent kv[t, 0 .. latentDim) by `normWeight` (sum of squares
 * in float64), rotate kv[t, latentDim ..] and the trailing ropeDim of each of q's heads by the
 * rotary table's row rotaryRows[t] (rotate_half pairing i <-> i + ropeDim / 2), all in place, then copy kv's row to
 * pool row slotMapping[t] ([slots, latentDim + ropeDim], in the cache's dtype: an fp8 row with
 * scale 1, an int8 row with one scale for the row). With `mla.queryTemperature`, every value of
 * q's row is then multiplied by the temperature of the token's position (positions[t]).
 */
export function mlaRopeAndCacheWrite(
  q: Float32Array,
  kv: Float32Array,
  rotaryRows: Int32Array,
  positions: Int32Array,
  slotMapping: Int32Array,
  normWeight: Float32Array,
  eps: number,
  rope: RopeTables,
  pool: CpuKvPool,
  mla: MlaParams,
): void {
  const { numHeads, latentDim, ropeDim, nopeDim } = mla;
  const rowWidth = latentDim + ropeDim;
  const headWidth = nopeDim + ropeDim;
  const numSlots = poolSlots(pool);
  if (rope.rotaryDim !== ropeDim) throw new Error(`mlaRopeAndCacheWrite: rotary dim ${rope.rotaryDim} != rope dim ${ropeDim}`);
  for (let t = 0; t < rotaryRows.length; t++) {
    const row = rotaryRows[t];
    if (row < 0 || row >= rope.maxPositions) {
      throw new KeelError('context_overflow', `rotary row ${row} is outside the rotary table's ${rope.maxPositions} rows`);
    }
    const slot = slotMapping[t];
    if (!(slot >= 0 && slot < numSlots)) throw new RangeError(`mlaRopeAndCacheWrite: slot ${slot} is outside [0, ${numSlots})`);
    const rowAt = t * rowWidth;
    let sumSquares = 0;
    for (let i = 0; i < latentDim; i++) sumSquares += kv[rowAt + i] * kv[rowAt + i];
    const inverseRms = 1 / Math.sqrt(sumSquares / latentDim + eps);
    for (let i = 0; i < latentDim; i++) kv[rowAt + i] = kv[rowAt + i] * inverseRms * normWeight[i];
    rotateHead(kv, rowAt + latentDim, rope, row, kv, rowAt + latentDim, ropeDim);
    for (let h = 0; h < numHeads; h++) rotateHead(q, (t * numHeads + h) * headWidth + nopeDim, rope, row, q, (t * numHeads + h) * headWidth + nopeDim, ropeDim);
    if (mla.queryTemperature != null) {
      const factor = queryTemperatureFactor(mla.queryTemperature, positions[t]);
      const queries = q.subarray(t * numHeads * headWidth, (t + 1) * numHeads * headWidth);
      for (let i = 0; i < queries.length; i++) queries[i] *= factor;
    }
    storeSlot(pool, slot, kv, rowAt, 1);
  }
}

/**
 * Absorbed multi-head latent attention over the paged pool of rows [latent | rope]
 * ([numBlocks * blockSize, latentDim + ropeDim]). Head h of token t (position p, sequence s)
 * scores the rows of positions 0 .. p of sequence s (or, with `selection` [numTokens, topK], the
 * positions of its row that are not -1: DeepSeek's sparse attention) as scale · (qLatent[t, h] ·
 * latent_j + q[t, h, nopeDim ..] · rope_j) and returns Σ_j softmax_j · latent_j in out
 * [numTokens, numHeads * latentDim]. An 8-bit pool is read as the values its codes stand for (each
 * sequence's rows dequantized once per call). Scores, softmax and sums are float64; each output is
 * rounded to float32 once.
 */
export function mlaAttention(
  qLatent: Float32Array,
  q: Float32Array,
  kvPool: CpuKvPool,
  blockSize: number,
  batch: BatchDescription,
  mla: MlaParams,
  out: Float32Array,
  selection: Int32Array | null = null,
): void {
  const { numHeads, latentDim, ropeDim, nopeDim, scale } = mla;
  const headWidth = nopeDim + ropeDim;
  const longest = batch.seqLens.reduce((m, len) => Math.max(m, len), 0);
  // Scratch shared by every (token, head): pool offsets of the visible rows, their weights, the output sums.
  const rowAt = new Int32Array(longest);
  const weights = new Float64Array(longest);
  const sums = new Float64Array(latentDim);
  const cached = new SequenceRows(kvPool, batch, blockSize);
  const pool = cached.rows;
  for (let s = 0; s < batch.numSeqs; s++) {
    cached.select(s);
    for (let t = batch.queryStartLoc[s]; t < batch.queryStartLoc[s + 1]; t++) {
      const position = batch.positions[t];
      if (position >= batch.seqLens[s]) {
        throw new RangeError(`mlaAttention: token ${t} at position ${position} is past its sequence's ${batch.seqLens[s]} cached tokens`);
      }
      let count = 0;
      if (selection === null) {
        for (let j = 0; j <= position; j++) rowAt[count++] = cached.offset(j);
      } else {
        const topK = selection.length / batch.numTokens;
        for (const j of selection.subarray(t * topK, (t + 1) * topK)) {
          if (j === -1) continue;
          if (!(j >= 0 && j <= position)) throw new RangeError(`mlaAttention: token ${t} at position ${position} selects position ${j}`);
          rowAt[count++] = cached.offset(j);
        }
      }
      for (let h = 0; h < numHeads; h++) {
        const latentAt = (t * numHeads + h) * latentDim;
        const ropeAt = (t * numHeads + h) * headWidth + nopeDim;
        let max = -Infinity;
        for (let j = 0; j < count; j++) {
          let score = 0;
          for (let d = 0; d < latentDim; d++) score += qLatent[latentAt + d] * pool[rowAt[j] + d];
          for (let d = 0; d < ropeDim; d++) score += q[ropeAt + d] * pool[rowAt[j] + latentDim + d];
          weights[j] = score * scale;
          if (weights[j] > max) max = weights[j];
        }
        let total = 0;
        sums.fill(0);
        for (let j = 0; j < count; j++) {
          const p = Math.exp(weights[j] - max);
          total += p;
          for (let d = 0; d < latentDim; d++) sums[d] += p * pool[rowAt[j] + d];
        }
        for (let d = 0; d < latentDim; d++) out[latentAt + d] = sums[d] / total;
      }
    }
  }
}
