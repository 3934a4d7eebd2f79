import type { AttentionShape } from '../../backend.ts';
import type { BatchDescription } from '../../../engine/batch.ts';
import type { LayerKvPools } from './rope-cache-write.ts';

/**
 * Paged causal attention. The query heads of token t (position p, sequence s) attend to keys and
 * values at positions max(0, p - slidingWindow + 1) .. p of sequence s, where position j lives in
 * block blockTables[s * maxBlocksPerSeq + floor(j / blockSize)] at offset j % blockSize. Query head
 * h reads kv head floor(h / (numHeads / numKvHeads)). out is [numTokens, numHeads * headDim].
 *
 * Scores, softmax and the weighted sum of values are in float64 with the max subtracted before
 * exponentiating; each output is rounded to float32 once.
 */
export function pagedAttention(
  qkv: Float32Array,
  pools: LayerKvPools,
  blockSize: number,
  batch: BatchDescription,
  shape: AttentionShape,
  out: Float32Array,
): void {
  const { numHeads, numKvHeads, headDim, scale, slidingWindow } = shape;
  const rowWidth = (numHeads + 2 * numKvHeads) * headDim;
  const kvWidth = numKvHeads * headDim;
  const headsPerKvHead = numHeads / numKvHeads;
  // Scratch reused by every (token, head): one allocation per call, none per element.
  const longest = batch.seqLens.reduce((m, len) => Math.max(m, len), 0);
  const keyRowAt = new Int32Array(longest);
  const weights = new Float64Array(longest);
  const acc = new Float64Array(headDim);
  const { keys, values } = pools;

  for (let s = 0; s < batch.numSeqs; s++) {
    const tableAt = s * batch.maxBlocksPerSeq;
    for (let t = batch.queryStartLoc[s]; t < batch.queryStartLoc[s + 1]; t++) {
      const position = batch.positions[t];
      if (position >= batch.seqLens[s]) {
        throw new RangeError(`pagedAttention: token ${t} at position ${position} is past its sequence's ${batch.seqLens[s]} cached tokens`);
      }
      const first = slidingWindow === null ? 0 : Math.max(0, position - slidingWindow + 1);
      const count = position - first + 1;
      // Slot offsets of the visible positions, shared by all heads of this token.
      for (let j = 0; j < count; j++) {
        const pos = first + j;
        const block = batch.blockTables[tableAt + Math.floor(pos / blockSize)];
        keyRowAt[j] = (block * blockSize + (pos % blockSize)) * kvWidth;
      }
      for (let h = 0; h < numHeads; h++) {
        const qAt = t * rowWidth + h * headDim;
        const kvHeadAt = Math.floor(h / headsPerKvHead) * headDim;
        let max = -Infinity;
        for (let j = 0; j < count; j++) {
          const kAt = keyRowAt[j] + kvHeadAt;
          let dot = 0;
          for (let d = 0; d < headDim; d++) dot += qkv[qAt + d] * keys[kAt + d];
          const score = dot * scale;
          weights[j] = score;
          if (score > max) max = score;
        }
        let sum = 0;
        for (let j = 0; j < count; j++) {
          const e = Math.exp(weights[j] - max);
          weights[j] = e;
          sum += e;
        }
        acc.fill(0);
        for (let j = 0; j < count; j++) {
          const vAt = keyRowAt[j] + kvHeadAt;
          const p = weights[j];
          for (let d = 0; d < headDim; d++) acc[d] += p * values[vAt + d];
        }
        const outAt = (t * numHeads + h) * headDim;
        for (let d = 0; d < headDim; d++) out[outAt + d] = acc[d] / sum;
      }
    }
  }
}
