import type { BatchDescription } from '../../src/engine/batch.ts';

/** One sequence's share of a step: `tokens` run at positions startPos, startPos + 1, ... */
export interface SequenceChunk {
  tokens: number[];
  startPos: number;
  /** Block ids in order; must cover positions 0 .. startPos + tokens.length - 1. */
  blockTable: number[];
}

/**
 * Flattens per-sequence chunks into a BatchDescription the way the model runner does. Logits are
 * requested for each sequence's last token unless `logitsIndices` says otherwise.
 */
export function buildBatch(chunks: SequenceChunk[], blockSize: number, logitsIndices?: number[]): BatchDescription {
  const numTokens = chunks.reduce((n, c) => n + c.tokens.length, 0);
  const maxBlocksPerSeq = Math.max(1, ...chunks.map((c) => c.blockTable.length));
  const tokenIds = new Int32Array(numTokens);
  const positions = new Int32Array(numTokens);
  const slotMapping = new Int32Array(numTokens);
  const queryStartLoc = new Int32Array(chunks.length + 1);
  const seqLens = new Int32Array(chunks.length);
  const blockTables = new Int32Array(chunks.length * maxBlocksPerSeq);
  let t = 0;
  chunks.forEach((chunk, s) => {
    const seqLen = chunk.startPos + chunk.tokens.length;
    if (chunk.blockTable.length * blockSize < seqLen) {
      throw new Error(`sequence ${s}: ${chunk.blockTable.length} blocks of ${blockSize} cannot hold ${seqLen} tokens`);
    }
    queryStartLoc[s] = t;
    seqLens[s] = seqLen;
    blockTables.set(chunk.blockTable, s * maxBlocksPerSeq);
    chunk.tokens.forEach((token, i) => {
      const position = chunk.startPos + i;
      tokenIds[t] = token;
      positions[t] = position;
      slotMapping[t] = chunk.blockTable[Math.floor(position / blockSize)] * blockSize + (position % blockSize);
      t++;
    });
  });
  queryStartLoc[chunks.length] = t;
  const lastTokens = chunks.map((_, s) => queryStartLoc[s + 1] - 1);
  return {
    numTokens,
    numSeqs: chunks.length,
    tokenIds,
    positions,
    slotMapping,
    queryStartLoc,
    seqLens,
    blockTables,
    maxBlocksPerSeq,
    maxQueryLen: Math.max(0, ...chunks.map((c) => c.tokens.length)),
    maxSeqLen: Math.max(0, ...seqLens),
    logitsIndices: Int32Array.from(logitsIndices ?? lastTokens),
  };
}
