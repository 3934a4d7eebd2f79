import { attentionSpan, queryTemperatureFactor, type AttentionParams } from '../../backend.ts';
import type { BatchDescription } from '../../../step/batch.ts';
import { sparseBlockCounts } from '../../../step/kv-cache-layout.ts';
import { selectKvBlocks } from './key-summaries.ts';
import { loadSlot } from './kv-codes.ts';
import { checkRotaryRow, rotateHead, type LayerKvPools, type RopeTables } from './rope-cache-write.ts';

/** AttentionParams with the sink logits and StreamingLLM's rotary table as host values. */
export interface CpuAttentionParams extends Omit<AttentionParams, 'sinks' | 'streaming'> {
  sinks: Float32Array | null;
  streaming: { sinks: number; window: number; rope: RopeTables } | null;
}

/**
 * Paged causal attention. The query heads of token t (position p, sequence s) attend to the keys
 * and values `attentionSpan` gives (positions max(0, p - window + 1) .. p, and the first `sinks`
 * positions; with an attention chunk, from p's chunk's start on), scores scaled by the layer's
 * scale times the query's temperature if it has one, where position j lives in block blockTables[s * maxBlocksPerSeq + floor(j / blockSize)]
 * at offset j % blockSize. With a tree mask (BatchDescription.treeMask), keys are counted by cache
 * index: a tree token at cache index c sees the window's keys up to c less the chunk tokens its
 * row hides (the window measured from its position; trees are shallower than any window). Query
 * head h reads kv head floor(h / (numHeads / numKvHeads)). out is
 * [numTokens, numHeads * headDim]. Scores are soft-capped (cap · tanh(score / cap)) when a cap is
 * given, and a head's sink logit, if any, joins the softmax's denominator (as an extra key whose
 * value is zero). With StreamingLLM the queries arrive unrotated: each is rotated at its rotary row
 * for the window's keys and at min(row, sinks + window - 1) for sink keys behind the window.
 *
 * With `sparse` (Quest), a decode token attends, per kv head, to the keys it would see densely
 * whose positions lie in the blocks `selectKvBlocks` picks for that head's query heads at the
 * token's position; other tokens attend densely. Decode tokens are those alone in their chunk and
 * every token of a verification chunk (`BatchDescription.verificationChunks`): each selects as a
 * decode at its position would, so a chain of drafts attends exactly as the decodes it stands for.
 * A tree token's ancestors sit at cache indices other than their positions, so its candidate blocks
 * must lie before its chunk (the recent window reaches past the tree: the engine's check), where
 * blocks hold what its path's decodes would see. A budget covering the whole sequence picks every
 * block, so the keys, and the output, are exactly dense attention's.
 *
 * An 8-bit cache is read as the values its codes stand for (kv-codes.ts `loadSlot`): each
 * sequence's visible slots are dequantized to float32 once per call, into rows by cache index.
 *
 * Scores, softmax and the weighted sum of values are in float64 with the max subtracted before
 * exponentiating; each output is rounded to float32 once.
 */
export function pagedAttention(
  qkv: Float32Array,
  pools: LayerKvPools,
  blockSize: number,
  batch: BatchDescription,
  params: CpuAttentionParams,
  out: Float32Array,
): void {
  const { numHeads, numKvHeads, headDim, softcap, sinks, streaming } = params;
  const sparse = params.sparse ?? null;
  const chunk = params.attentionChunk ?? null;
  const temperature = params.queryTemperature ?? null;
  if (chunk !== null && (streaming !== null || sparse !== null)) throw new Error('pagedAttention: chunked attention does not combine with StreamingLLM or sparse attention');
  // The current token's score scale: the layer's, times its query temperature (Llama 4's NoPE layers, Ministral 3).
  let scale = params.scale;
  const span = attentionSpan(params);
  const rowWidth = (numHeads + 2 * numKvHeads) * headDim;
  const kvWidth = numKvHeads * headDim;
  const headsPerKvHead = numHeads / numKvHeads;
  // Scratch reused by every (token, head): one allocation per call, none per element.
  // `weights` holds scores, then their exponentials.
  const longest = batch.seqLens.reduce((m, len) => Math.max(m, len), 0);
  const keyRowAt = new Int32Array(longest);
  const weights = new Float64Array(longest);
  // StreamingLLM's rotated queries of one token: every head at its row, then at its sink row.
  const windowQueries = streaming === null ? qkv : new Float32Array(numHeads * headDim);
  const sinkQueries = new Float32Array(span.sinks > 0 ? numHeads * headDim : 0);
  const quantized = pools.keys.dtype !== 'auto';
  // Float32 rows the scores read: the pools themselves (indexed by slot), or for an 8-bit cache
  // the sequence's dequantized rows (indexed by cache index: the position, except for tree tokens).
  const keys = quantized ? new Float32Array(longest * kvWidth) : (pools.keys.codes as Float32Array);
  const values = quantized ? new Float32Array(longest * kvWidth) : (pools.values.codes as Float32Array);
  const slotOf = (tableAt: number, pos: number) => batch.blockTables[tableAt + Math.floor(pos / blockSize)] * blockSize + (pos % blockSize);

  const { treeMask, treeMaskWords } = batch;
  if (treeMask !== null && streaming !== null) throw new Error('pagedAttention: StreamingLLM does not take a tree mask');
  if (sparse !== null && !pools.summaries) throw new Error('pagedAttention: sparse attention needs the layer\'s key summaries');
  // Whether token t's tree row hides the j-th token of its chunk (j < 0: a key before the chunk).
  const hiddenByTree = (t: number, j: number) => treeMask !== null && j >= 0 && j < 32 * treeMaskWords && (treeMask[t * treeMaskWords + (j >> 5)] & (1 << (j & 31))) === 0;
  // The token being attended: its row of qkv (or of the rotated queries), and its visible keys' rows keyRowAt[0 .. count).
  let token = 0;
  let qBase = 0;
  let count = 0;
  for (let s = 0; s < batch.numSeqs; s++) {
    const tableAt = s * batch.maxBlocksPerSeq;
    const chunkStart = batch.queryStartLoc[s];
    const chunkCacheIndex = batch.seqLens[s] - (batch.queryStartLoc[s + 1] - chunkStart);
    if (quantized) dequantizeVisible(pools, batch, s, span, (index) => slotOf(tableAt, index), keys, values, kvWidth);
    for (let t = chunkStart; t < batch.queryStartLoc[s + 1]; t++) {
      const position = batch.positions[t];
      // Where the token's own K/V sit: its position, unless it is a tree token deeper than the root.
      const cacheIndex = chunkCacheIndex + t - chunkStart;
      if (position > cacheIndex) {
        throw new RangeError(`pagedAttention: token ${t} at position ${position} is past its cache index ${cacheIndex} (its sequence has ${batch.seqLens[s]} cached tokens)`);
      }
      const windowFirst = span.window === null ? 0 : Math.max(0, position - span.window + 1);
      const first = chunk === null ? windowFirst : Math.max(windowFirst, position - (position % chunk));
      scale = temperature === null ? params.scale : params.scale * queryTemperatureFactor(temperature, position);
      // Sink positions 0 .. numSinks - 1 lie behind the window; those inside it are window keys.
      const numSinks = Math.min(span.sinks, first);
      // Offsets of the visible keys' rows, shared by all heads of this token: the sinks, then the
      // window up to the token itself, less the chunk tokens its tree row hides.
      token = t;
      count = 0;
      const keyRow = (index: number) => (quantized ? index : slotOf(tableAt, index)) * kvWidth;
      for (let index = 0; index < numSinks; index++) keyRowAt[count++] = keyRow(index);
      for (let index = first; index <= cacheIndex; index++) {
        if (hiddenByTree(t, index - chunkCacheIndex)) continue;
        keyRowAt[count++] = keyRow(index);
      }
      qBase = t * rowWidth;
      if (streaming !== null) {
        const row = batch.rotaryRows[t];
        const sinkRow = Math.min(row, streaming.sinks + streaming.window - 1);
        checkRotaryRow(row, streaming.rope);
        for (let h = 0; h < numHeads; h++) {
          rotateHead(qkv, qBase + h * headDim, streaming.rope, row, windowQueries, h * headDim, headDim);
          if (numSinks > 0) rotateHead(qkv, qBase + h * headDim, streaming.rope, sinkRow, sinkQueries, h * headDim, headDim);
        }
        qBase = 0;
      }
      const chunkLen = batch.queryStartLoc[s + 1] - chunkStart;
      const sparseDecode = sparse !== null && (chunkLen === 1 || batch.verificationChunks?.[s] === 1);
      if (sparseDecode) {
        // Per kv head, the keys the token sees densely whose positions' blocks are selected, in order.
        const blockIds = batch.blockTables.subarray(tableAt, tableAt + batch.maxBlocksPerSeq);
        const tree = batch.positions[batch.queryStartLoc[s + 1] - 1] !== batch.seqLens[s] - 1;
        const counts = sparseBlockCounts(sparse, blockSize);
        const numBlocks = Math.ceil((position + 1) / blockSize);
        if (tree && numBlocks > counts.budget && (numBlocks - counts.window) * blockSize > chunkCacheIndex) {
          throw new Error(`pagedAttention: tree token ${t} at position ${position} selects among blocks its chunk (from cache index ${chunkCacheIndex}) fills: the recent window must reach past the tree`);
        }
        for (let kvHead = 0; kvHead < numKvHeads; kvHead++) {
          const blocks = selectKvBlocks(qkv, qBase + kvHead * headsPerKvHead * headDim, headsPerKvHead, pools.summaries!, blockIds, position + 1, kvHead, numKvHeads, headDim, blockSize, sparse);
          const selected = new Uint8Array(numBlocks);
          for (const b of blocks) selected[b] = 1;
          count = 0;
          for (let index = 0; index <= cacheIndex; index++) {
            const j = index - chunkCacheIndex;
            if (hiddenByTree(t, j)) continue;
            const keyPosition = j >= 0 ? batch.positions[chunkStart + j] : index;
            if (selected[Math.floor(keyPosition / blockSize)] === 1) keyRowAt[count++] = keyRow(index);
          }
          for (let h = kvHead * headsPerKvHead; h < (kvHead + 1) * headsPerKvHead; h++) attendHead(h, 0);
        }
      } else {
        for (let h = 0; h < numHeads; h++) attendHead(h, numSinks);
      }
    }
  }

  // Query head h of the current token over the keys keyRowAt[0 .. count), the first `sinkKeys` of them scored with the sink-rotated query.
  function attendHead(h: number, sinkKeys: number): void {
    const qAt = qBase + h * headDim;
    const kvHeadAt = Math.floor(h / headsPerKvHead) * headDim;
    scoreKeys(sinkQueries, h * headDim, keys, keyRowAt, kvHeadAt, 0, sinkKeys, headDim, scale, weights);
    scoreKeys(windowQueries, qAt, keys, keyRowAt, kvHeadAt, sinkKeys, count, headDim, scale, weights);
    if (softcap !== null) for (let j = 0; j < count; j++) weights[j] = softcap * Math.tanh(weights[j] / softcap);
    const sink = sinks === null ? -Infinity : sinks[h];
    let max = sink;
    for (let j = 0; j < count; j++) if (weights[j] > max) max = weights[j];
    let sum = sinks === null ? 0 : Math.exp(sink - max);
    for (let j = 0; j < count; j++) {
      const e = Math.exp(weights[j] - max);
      weights[j] = e;
      sum += e;
    }
    sumValues(values, keyRowAt, kvHeadAt, count, headDim, weights, sum, out, (token * numHeads + h) * headDim);
  }
}

// Dequantizes the keys and values sequence s's tokens see (its sinks and every cache index from the
// earliest window start up to its last token's) into rows indexed by cache index.
function dequantizeVisible(
  pools: LayerKvPools,
  batch: BatchDescription,
  s: number,
  span: { window: number | null; sinks: number },
  slotOf: (index: number) => number,
  keys: Float32Array,
  values: Float32Array,
  kvWidth: number,
): void {
  let lo = Infinity;
  for (let t = batch.queryStartLoc[s]; t < batch.queryStartLoc[s + 1]; t++) {
    lo = Math.min(lo, span.window === null ? 0 : Math.max(0, batch.positions[t] - span.window + 1));
  }
  if (lo === Infinity) return;
  for (let index = 0; index < batch.seqLens[s]; index++) {
    if (index < lo && index >= span.sinks) continue;
    const slot = slotOf(index);
    loadSlot(pools.keys, slot, pools.kScale, keys, index * kvWidth);
    loadSlot(pools.values, slot, pools.vScale, values, index * kvWidth);
  }
}

// scores[j] = scale * dot(q, key j) for j in [from, to), four keys per pass so each query value is
// loaded once for four products.
function scoreKeys(
  qkv: Float32Array,
  qAt: number,
  keys: Float32Array,
  keyRowAt: Int32Array,
  kvHeadAt: number,
  from: number,
  to: number,
  headDim: number,
  scale: number,
  scores: Float64Array,
): void {
  let j = from;
  for (; j + 4 <= to; j += 4) {
    const k0 = keyRowAt[j] + kvHeadAt;
    const k1 = keyRowAt[j + 1] + kvHeadAt;
    const k2 = keyRowAt[j + 2] + kvHeadAt;
    const k3 = keyRowAt[j + 3] + kvHeadAt;
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (let d = 0; d < headDim; d++) {
      const q = qkv[qAt + d];
      s0 += q * keys[k0 + d]; s1 += q * keys[k1 + d]; s2 += q * keys[k2 + d]; s3 += q * keys[k3 + d];
    }
    scores[j] = s0 * scale; scores[j + 1] = s1 * scale; scores[j + 2] = s2 * scale; scores[j + 3] = s3 * scale;
  }
  for (; j < to; j++) {
    const k0 = keyRowAt[j] + kvHeadAt;
    let s0 = 0;
    for (let d = 0; d < headDim; d++) s0 += qkv[qAt + d] * keys[k0 + d];
    scores[j] = s0 * scale;
  }
}

// out[d] = sum_j weights[j] * value j [d] / sum, four output dimensions per pass: the sums live in
// registers instead of a read-modify-write accumulator array.
function sumValues(
  values: Float32Array,
  keyRowAt: Int32Array,
  kvHeadAt: number,
  count: number,
  headDim: number,
  weights: Float64Array,
  sum: number,
  out: Float32Array,
  outAt: number,
): void {
  let d = 0;
  for (; d + 4 <= headDim; d += 4) {
    let a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    for (let j = 0; j < count; j++) {
      const p = weights[j];
      const at = keyRowAt[j] + kvHeadAt + d;
      a0 += p * values[at]; a1 += p * values[at + 1]; a2 += p * values[at + 2]; a3 += p * values[at + 3];
    }
    out[outAt + d] = a0 / sum; out[outAt + d + 1] = a1 / sum; out[outAt + d + 2] = a2 / sum; out[outAt + d + 3] = a3 / sum;
  }
  for (; d < headDim; d++) {
    let a = 0;
    for (let j = 0; j < count; j++) a += weights[j] * values[keyRowAt[j] + kvHeadAt + d];
    out[outAt + d] = a / sum;
  }
}
