import { sparseBlockCounts, type SparseAttention } from '../../../step/kv-cache-layout.ts';
import { loadSlot, type CpuKvPool } from './kv-codes.ts';

/**
 * Quest's key summaries (docs/long-context.md, "Sparse attention"): `summaries` is [numBlocks,
 * numKvHeads, 2, headDim] float32, per block and kv head the minimum of each key channel, then the
 * maximum. For each written slot that is the last of the step's writes to its block (the next
 * token's slot lies in another block, or there is none), the block's summaries are recomputed from
 * its keys at offsets 0 .. the slot's, as the cache holds them (loadSlot: an int8 cache's codes
 * dequantized with their scales; an fp8 cache's codes at scale 1: the layer's per-tensor k_scale
 * multiplies every block's bound alike, so it ranks blocks as the keys do, and the summaries depend
 * on the cache alone). Tokens fill a block in order, so those are exactly the keys the block holds
 * for its sequence; a block filled by a copy (copy-on-write, swap, the host tier) brings its
 * summaries with it, and copySlots recomputes its destinations' blocks with this.
 */
export function writeKeySummaries(keys: CpuKvPool, summaries: Float32Array, slotMapping: Int32Array, blockSize: number): void {
  const { heads, width } = keys;
  const key = new Float32Array(heads * width);
  for (let t = 0; t < slotMapping.length; t++) {
    const block = Math.floor(slotMapping[t] / blockSize);
    if (t + 1 < slotMapping.length && Math.floor(slotMapping[t + 1] / blockSize) === block) continue;
    const at = block * heads * 2 * width;
    for (let h = 0; h < heads; h++) {
      summaries.fill(Infinity, at + (2 * h) * width, at + (2 * h + 1) * width);
      summaries.fill(-Infinity, at + (2 * h + 1) * width, at + (2 * h + 2) * width);
    }
    for (let slot = block * blockSize; slot <= slotMapping[t]; slot++) {
      loadSlot(keys, slot, 1, key, 0);
      for (let h = 0; h < heads; h++) {
        const minAt = at + 2 * h * width;
        const maxAt = minAt + width;
        for (let c = 0; c < width; c++) {
          const k = key[h * width + c];
          if (k < summaries[minAt + c]) summaries[minAt + c] = k;
          if (k > summaries[maxAt + c]) summaries[maxAt + c] = k;
        }
      }
    }
  }
}

/**
 * The blocks (indices into its block table, ascending) that a decode of a sequence holding `seqLen`
 * tokens attends to with kv head `kvHead` (SparseAttention says which). `query` holds the query
 * heads sharing that kv head from `queryAt` on, `group` rows of headDim; `blockIds` the sequence's
 * block table. Scores are summed in float64.
 */
export function selectKvBlocks(
  query: Float32Array,
  queryAt: number,
  group: number,
  summaries: Float32Array,
  blockIds: Int32Array,
  seqLen: number,
  kvHead: number,
  numKvHeads: number,
  headDim: number,
  blockSize: number,
  sparse: SparseAttention,
): Int32Array {
  const numBlocks = Math.ceil(seqLen / blockSize);
  const counts = sparseBlockCounts(sparse, blockSize);
  if (numBlocks <= counts.budget) return Int32Array.from({ length: numBlocks }, (_, b) => b);
  const first = counts.sinks;
  const end = numBlocks - counts.window;
  const candidates: { block: number; score: number }[] = [];
  for (let b = first; b < end; b++) candidates.push({ block: b, score: blockScore(query, queryAt, group, summaries, blockIds[b], kvHead, numKvHeads, headDim) });
  candidates.sort((x, y) => y.score - x.score || x.block - y.block);
  const chosen = candidates.slice(0, counts.budget - counts.sinks - counts.window).map((c) => c.block);
  const blocks = [...Array.from({ length: first }, (_, b) => b), ...chosen.sort((x, y) => x - y), ...Array.from({ length: numBlocks - end }, (_, i) => end + i)];
  return Int32Array.from(blocks);
}

/** Σ over the group's query heads and channels c of max(q_c · min_c, q_c · max_c): an upper bound of q · k for every key of the block. */
export function blockScore(query: Float32Array, queryAt: number, group: number, summaries: Float32Array, blockId: number, kvHead: number, numKvHeads: number, headDim: number): number {
  const minAt = (blockId * numKvHeads + kvHead) * 2 * headDim;
  const maxAt = minAt + headDim;
  let score = 0;
  for (let h = 0; h < group; h++) {
    const qAt = queryAt + h * headDim;
    for (let c = 0; c < headDim; c++) {
      const q = query[qAt + c];
      score += Math.max(q * summaries[minAt + c], q * summaries[maxAt + c]);
    }
  }
  return score;
}
