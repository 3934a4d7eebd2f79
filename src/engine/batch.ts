/**
 * The one description of a forward step that crosses the model/backend boundary. The scheduler
 * decides which tokens run; the model runner flattens that decision into these arrays; every
 * backend (CPU reference, CUDA) consumes exactly this.
 *
 * Tokens of all sequences are concatenated: sequence `s` owns flattened tokens
 * `queryStartLoc[s] .. queryStartLoc[s+1]`. A decode contributes one token, a prefill chunk many.
 * Earlier context of every sequence is already in the paged KV cache and is read through
 * `blockTables`, so a chunk of a long prompt or a prefix-cache hit costs no recompute.
 */
export interface BatchDescription {
  numTokens: number;
  numSeqs: number;
  /** [numTokens] token ids. */
  tokenIds: Int32Array;
  /** [numTokens] absolute position of each token in its sequence. */
  positions: Int32Array;
  /** [numTokens] KV-pool slot each token's K/V is written to: block * blockSize + offset. */
  slotMapping: Int32Array;
  /** [numSeqs + 1] offsets of each sequence's tokens in the flattened arrays. */
  queryStartLoc: Int32Array;
  /** [numSeqs] tokens in the KV cache for the sequence once this step's tokens are written. */
  seqLens: Int32Array;
  /** [numSeqs * maxBlocksPerSeq] row-major; entries past a sequence's blocks are 0 and never read. */
  blockTables: Int32Array;
  maxBlocksPerSeq: number;
  /** Largest per-sequence query length (1 for a decode-only batch). */
  maxQueryLen: number;
  maxSeqLen: number;
  /** Flattened token indices whose logits are wanted, in output-row order (one per sampled sequence). */
  logitsIndices: Int32Array;
}

/** KV-pool geometry shared by the block manager and the backends. */
export interface KvCacheSpec {
  numLayers: number;
  numBlocks: number;
  blockSize: number;
  numKvHeads: number;
  headDim: number;
}
