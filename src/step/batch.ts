/**
 * The one description of a forward step that crosses the model/backend boundary. The scheduler
 * decides which tokens run; the model runner flattens that decision into these arrays; every
 * backend (CPU reference, CUDA) consumes exactly this.
 *
 * Tokens of all sequences are concatenated: sequence `s` owns flattened tokens
 * `queryStartLoc[s] .. queryStartLoc[s+1]`. A decode contributes one token, a prefill chunk many.
 * Earlier context of every sequence is already in the paged KV cache and is read through
 * `blockTables`, so a chunk of a long prompt or a prefix-cache hit costs no recompute.
 *
 * A sequence has one block table per KV group (`kvCacheGroups`): each layer writes its K/V to its
 * group's slots and reads through its group's tables (`groupSlotMapping`, `groupBlockTables`).
 */
export interface BatchDescription {
  numTokens: number;
  numSeqs: number;
  /** [numTokens] token ids; -1 where `tokenSources` names where the device holds the token. */
  tokenIds: Int32Array;
  /**
   * [numTokens] -1, or the draw of the backend's most recent `sampleRows` pass that holds the
   * token: a decode scheduled before the host has read the token the previous step sampled.
   */
  tokenSources: Int32Array;
  /** [numTokens] absolute position of each token in its sequence. */
  positions: Int32Array;
  /**
   * [numTokens] row of the rotary tables each token is rotated with: its position, unless its
   * chunk maps positions to other rows (LongRoPE's long-factor rows, `SequenceChunk.rotaryRow`).
   * Attention masks read `positions`; only the rotation reads these.
   */
  rotaryRows: Int32Array;
  /** KV groups: every sequence has a block table per group. */
  numKvGroups: number;
  /** [numKvGroups, numTokens] KV-pool slot each token's K/V is written to in each group: block * blockSize + offset. */
  slotMapping: Int32Array;
  /** [numSeqs + 1] offsets of each sequence's tokens in the flattened arrays. */
  queryStartLoc: Int32Array;
  /** [numSeqs] tokens in the KV cache for the sequence once this step's tokens are written. */
  seqLens: Int32Array;
  /** [numKvGroups, numSeqs, maxBlocksPerSeq] row-major; entries past a sequence's blocks are 0 and never read. */
  blockTables: Int32Array;
  maxBlocksPerSeq: number;
  /** Largest per-sequence query length (1 for a decode-only batch). */
  maxQueryLen: number;
  maxSeqLen: number;
  /** Flattened token indices whose logits are wanted, in output-row order (one per sampled sequence). */
  logitsIndices: Int32Array;
  /**
   * [numTokens] the LoRA adapter slot each token runs with, -1 for the base model; null when no
   * token of the step has an adapter (docs/lora.md).
   */
  loraSlots: Int32Array | null;
  /**
   * [numSeqs] the state slot of each sequence (layers with a `SequenceStateSpec`: each reads and
   * updates its slot, from zero where the sequence's chunk starts at cache index 0); null when no
   * layer keeps one.
   */
  stateSlots: Int32Array | null;
  /**
   * Tree attention (speculative tree verification), or null when every chunk is causal.
   * [numTokens * treeMaskWords]: bit j (bit j & 31 of word j >> 5) of token t's row is set when t
   * sees the j-th token of its own chunk; a chunk token past the row's bits (j >= 32 *
   * treeMaskWords) is seen. Whatever the bits, a token sees no chunk token after itself, and every
   * key before its chunk (within its window): a causal chunk's rows have every bit set.
   */
  treeMask: Int32Array | null;
  /** Words per row of `treeMask` (0 without one). */
  treeMaskWords: number;
  /**
   * [numSeqs] 1 where the sequence's chunk is its last sampled token and its drafts (speculative
   * verification), 0 elsewhere; null when no chunk of the step is. Sparse attention reads it: each
   * token of such a chunk attends as a decode at its position would.
   */
  verificationChunks: Uint8Array | null;
}

/** One sequence's share of a step: `tokens` run at positions startPos, startPos + 1, ... */
export interface SequenceChunk {
  tokens: number[];
  startPos: number;
  /** Per KV group, block ids in order; each must cover positions 0 .. startPos + tokens.length - 1. */
  blockTables: readonly (readonly number[])[];
  /** Set when the last token is still on the device: its draw in the latest `sampleRows` pass. */
  lastTokenSource?: number;
  /** [tokens.length] where tokens are still on the device: -1, or the token's draw in the latest `sampleRows` pass. */
  tokenSources?: readonly number[];
  /** The rotary-table row of the token at `position`; absent, the position itself. */
  rotaryRow?: (position: number) => number;
  /** The LoRA adapter slot its tokens run with; absent, the base model. */
  loraSlot?: number;
  /** The sequence's state slot (`BatchDescription.stateSlots`); absent where no layer keeps a state. */
  stateSlot?: number;
  /**
   * A token tree (speculative tree verification): [tokens.length] each token's parent, the index
   * of an earlier token of the chunk, -1 for the first token (the root) alone. A token then sees
   * the keys before the chunk and its ancestors' and its own, and sits at position startPos + its
   * depth; its K/V still go to the chunk's consecutive slots (cache index startPos + i).
   */
  treeParents?: readonly number[];
  /** Set when the chunk is the last sampled token and its drafts (speculative verification). */
  verification?: boolean;
}

/** Group `group`'s slots of the step's tokens, [numTokens]. */
export function groupSlotMapping(batch: BatchDescription, group: number): Int32Array {
  return batch.slotMapping.subarray(group * batch.numTokens, (group + 1) * batch.numTokens);
}

/** Group `group`'s block tables, [numSeqs * maxBlocksPerSeq]. */
export function groupBlockTables(batch: BatchDescription, group: number): Int32Array {
  const size = batch.numSeqs * batch.maxBlocksPerSeq;
  return batch.blockTables.subarray(group * size, (group + 1) * size);
}

/** The step as the layers of group `group` see it: that group's slots and block tables alone. */
export function groupBatch(batch: BatchDescription, group: number): BatchDescription {
  if (!(Number.isInteger(group) && group >= 0 && group < batch.numKvGroups)) throw new RangeError(`KV group ${group} is outside the step's ${batch.numKvGroups} groups`);
  if (batch.numKvGroups === 1) return batch;
  return { ...batch, numKvGroups: 1, slotMapping: groupSlotMapping(batch, group), blockTables: groupBlockTables(batch, group) };
}

/** Positions startPos + depth of a token tree's tokens, checking that each parent comes before its child. */
function treeDepths(parents: readonly number[]): number[] {
  const depths: number[] = [];
  parents.forEach((parent, i) => {
    if (i === 0 ? parent !== -1 : !(Number.isInteger(parent) && parent >= 0 && parent < i)) {
      throw new Error(`token tree: token ${i}'s parent ${parent} is not an earlier token of the chunk${i === 0 ? ' (the root has parent -1)' : ''}`);
    }
    depths.push(i === 0 ? 0 : depths[parent] + 1);
  });
  return depths;
}

/**
 * Flattens per-sequence chunks into a BatchDescription. Logits are requested for each sequence's
 * last token unless `logitsIndices` says otherwise. Block-table rows are as wide as the longest
 * table, or `minBlocksPerSeq` if wider (a fixed width keeps a decode step's shape, for CUDA graphs).
 */
export function describeBatch(chunks: SequenceChunk[], blockSize: number, logitsIndices?: number[], minBlocksPerSeq = 1): BatchDescription {
  const numTokens = chunks.reduce((n, c) => n + c.tokens.length, 0);
  const numKvGroups = chunks[0]?.blockTables.length ?? 1;
  chunks.forEach((c, s) => {
    if (c.blockTables.length !== numKvGroups) throw new Error(`sequence ${s}: ${c.blockTables.length} block tables, but sequence 0 has ${numKvGroups}`);
  });
  const maxBlocksPerSeq = Math.max(minBlocksPerSeq, ...chunks.flatMap((c) => c.blockTables.map((table) => table.length)));
  const tokenIds = new Int32Array(numTokens);
  const tokenSources = new Int32Array(numTokens).fill(-1);
  const positions = new Int32Array(numTokens);
  const rotaryRows = new Int32Array(numTokens);
  const slotMapping = new Int32Array(numKvGroups * numTokens);
  const queryStartLoc = new Int32Array(chunks.length + 1);
  const seqLens = new Int32Array(chunks.length);
  const blockTables = new Int32Array(numKvGroups * chunks.length * maxBlocksPerSeq);
  const loraSlots = chunks.some((c) => c.loraSlot !== undefined) ? new Int32Array(numTokens).fill(-1) : null;
  const stateSlots = chunks.some((c) => c.stateSlot !== undefined) ? Int32Array.from(chunks, (c) => c.stateSlot ?? -1) : null;
  const trees = chunks.filter((c) => c.treeParents !== undefined);
  const treeMaskWords = trees.length === 0 ? 0 : Math.ceil(Math.max(...trees.map((c) => c.tokens.length)) / 32);
  const treeMask = trees.length === 0 ? null : new Int32Array(numTokens * treeMaskWords).fill(-1);
  const verificationChunks = chunks.some((c) => c.verification === true) ? Uint8Array.from(chunks, (c) => (c.verification === true ? 1 : 0)) : null;
  let t = 0;
  chunks.forEach((chunk, s) => {
    const seqLen = chunk.startPos + chunk.tokens.length;
    let depths: number[] | null = null;
    if (chunk.treeParents !== undefined) {
      if (chunk.treeParents.length !== chunk.tokens.length) throw new Error(`sequence ${s}: ${chunk.treeParents.length} tree parents for ${chunk.tokens.length} tokens`);
      depths = treeDepths(chunk.treeParents);
      // Row i: the token's ancestors and itself.
      const parents = chunk.treeParents;
      for (let i = 0; i < parents.length; i++) {
        const row = (t + i) * treeMaskWords;
        treeMask!.fill(0, row, row + treeMaskWords);
        for (let j = i; j >= 0; j = parents[j]) treeMask![row + (j >> 5)] |= 1 << (j & 31);
      }
    }
    chunk.blockTables.forEach((table, g) => {
      if (table.length * blockSize < seqLen) throw new Error(`sequence ${s}: ${table.length} blocks of ${blockSize} in group ${g} cannot hold ${seqLen} tokens`);
      blockTables.set(table, (g * chunks.length + s) * maxBlocksPerSeq);
    });
    queryStartLoc[s] = t;
    seqLens[s] = seqLen;
    if (loraSlots !== null && chunk.loraSlot !== undefined) loraSlots.fill(chunk.loraSlot, t, t + chunk.tokens.length);
    // Plain loops: this runs for every token of every step.
    for (let i = 0; i < chunk.tokens.length; i++, t++) {
      const cacheIndex = chunk.startPos + i;
      const position = depths === null ? cacheIndex : chunk.startPos + depths[i];
      tokenIds[t] = chunk.tokens[i];
      positions[t] = position;
      rotaryRows[t] = chunk.rotaryRow === undefined ? position : chunk.rotaryRow(position);
      for (let g = 0; g < numKvGroups; g++) {
        slotMapping[g * numTokens + t] = chunk.blockTables[g][Math.floor(cacheIndex / blockSize)] * blockSize + (cacheIndex % blockSize);
      }
    }
    if (chunk.tokenSources !== undefined) {
      if (chunk.tokenSources.length !== chunk.tokens.length) throw new Error(`sequence ${s}: ${chunk.tokenSources.length} token sources for ${chunk.tokens.length} tokens`);
      chunk.tokenSources.forEach((source, i) => {
        if (source < 0) return;
        tokenIds[t - chunk.tokens.length + i] = -1;
        tokenSources[t - chunk.tokens.length + i] = source;
      });
    }
    if (chunk.lastTokenSource !== undefined) {
      tokenIds[t - 1] = -1;
      tokenSources[t - 1] = chunk.lastTokenSource;
    }
  });
  queryStartLoc[chunks.length] = t;
  const lastTokens = chunks.map((_, s) => queryStartLoc[s + 1] - 1);
  return {
    numTokens,
    numSeqs: chunks.length,
    tokenIds,
    tokenSources,
    positions,
    rotaryRows,
    numKvGroups,
    slotMapping,
    queryStartLoc,
    seqLens,
    blockTables,
    maxBlocksPerSeq,
    maxQueryLen: Math.max(0, ...chunks.map((c) => c.tokens.length)),
    maxSeqLen: Math.max(0, ...seqLens),
    logitsIndices: Int32Array.from(logitsIndices ?? lastTokens),
    loraSlots,
    stateSlots,
    treeMask,
    treeMaskWords,
    verificationChunks,
  };
}
