import type { BatchDescription } from '../../step/batch.ts';

// Where MLA's expanded prefill (kernels/mla-expansion.ts) lays out a step's chunks' contexts: host
// logic only, planned with the step (beginStep) and uploaded with its index arrays.

/** Keys per block of the scratch's own block tables. */
export const MLA_EXPANSION_BLOCK = 64;
/** Chunks shorter than this take the absorbed form: projecting the context costs more than its pairs save. */
export const MLA_EXPANSION_MIN_CHUNK = 64;

/** Where each chunk's context lies in the scratch. */
export interface MlaExpansionPlan {
  /** Scratch rows: every chunk's sequence length rounded up to whole blocks. */
  rows: number;
  /** [blocks, 2]: (sequence, first key) of each scratch block. */
  blocks: Int32Array;
  /** [numSeqs, maxBlocks]: each sequence's scratch blocks (zeros for sequences without a chunk). */
  tables: Int32Array;
  maxBlocks: number;
}

/** The scratch for the step's chunks, or null when it has none or one shorter than MLA_EXPANSION_MIN_CHUNK. */
export function planMlaExpansion(batch: BatchDescription): MlaExpansionPlan | null {
  const chunks: number[] = [];
  for (let s = 0; s < batch.numSeqs; s++) {
    const len = batch.queryStartLoc[s + 1] - batch.queryStartLoc[s];
    if (len === 1) continue;
    if (len < MLA_EXPANSION_MIN_CHUNK) return null;
    chunks.push(s);
  }
  if (chunks.length === 0) return null;
  const blocksOf = (s: number) => Math.ceil(batch.seqLens[s] / MLA_EXPANSION_BLOCK);
  const maxBlocks = Math.max(...chunks.map(blocksOf));
  const tables = new Int32Array(batch.numSeqs * maxBlocks);
  const blocks: number[] = [];
  for (const s of chunks) {
    for (let b = 0; b < blocksOf(s); b++) {
      tables[s * maxBlocks + b] = blocks.length / 2;
      blocks.push(s, b * MLA_EXPANSION_BLOCK);
    }
  }
  return { rows: (blocks.length / 2) * MLA_EXPANSION_BLOCK, blocks: Int32Array.from(blocks), tables, maxBlocks };
}
