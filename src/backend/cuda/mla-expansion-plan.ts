import type { BatchDescription } from '../../step/batch.ts';
import type { AttentionSplit } from './attention-plan.ts';

// Where MLA's expanded prefill (kernels/mla-expansion.ts) lays out a step's chunks' contexts: host
// logic only, planned with the step (beginStep) and uploaded with its index arrays.

/** Keys per block of the scratch's own block tables. */
export const MLA_EXPANSION_BLOCK = 64;
/** Chunks shorter than this take the absorbed form: projecting their context would cost more than their pairs save. */
export const MLA_EXPANSION_MIN_CHUNK = 64;

/** Which of a step's chunks run expanded, and where their contexts lie in the scratch. */
export interface MlaExpansionPlan {
  /** Scratch rows: every expanded chunk's sequence length rounded up to whole blocks. */
  rows: number;
  /** [blocks, 2]: (sequence, first key) of each scratch block. */
  blocks: Int32Array;
  /** [numSeqs, maxBlocks]: each sequence's scratch blocks (zeros for sequences not expanded). */
  tables: Int32Array;
  maxBlocks: number;
  /** [n, 2]: the expanded chunks' 128-row tiles, planAttention's wideTiles of those sequences, in its order. */
  wideTiles: Int32Array;
  /** [n, 2]: the other chunks' 64-row tiles (planAttention's prefillTiles), which run absorbed beside the decodes. */
  absorbedTiles: Int32Array;
}

/**
 * The step's chunks of MLA_EXPANSION_MIN_CHUNK tokens or more, expanded, or null when it has none.
 * `plan` is planAttention's for the step; its dense split's tiles are parted between the forms.
 */
export function planMlaExpansion(batch: BatchDescription, plan: AttentionSplit): MlaExpansionPlan | null {
  const expanded = new Set<number>();
  for (let s = 0; s < batch.numSeqs; s++) {
    if (batch.queryStartLoc[s + 1] - batch.queryStartLoc[s] >= MLA_EXPANSION_MIN_CHUNK) expanded.add(s);
  }
  if (expanded.size === 0) return null;
  const blocksOf = (s: number) => Math.ceil(batch.seqLens[s] / MLA_EXPANSION_BLOCK);
  let maxBlocks = 0;
  for (const s of expanded) maxBlocks = Math.max(maxBlocks, blocksOf(s));
  const tables = new Int32Array(batch.numSeqs * maxBlocks);
  const blocks: number[] = [];
  for (const s of expanded) {
    for (let b = 0; b < blocksOf(s); b++) {
      tables[s * maxBlocks + b] = blocks.length / 2;
      blocks.push(s, b * MLA_EXPANSION_BLOCK);
    }
  }
  const tilesOf = (tiles: Int32Array, keep: (seq: number) => boolean) => {
    const kept: number[] = [];
    for (let i = 0; i < tiles.length; i += 2) if (keep(tiles[i])) kept.push(tiles[i], tiles[i + 1]);
    return Int32Array.from(kept);
  };
  return {
    rows: (blocks.length / 2) * MLA_EXPANSION_BLOCK,
    blocks: Int32Array.from(blocks),
    tables,
    maxBlocks,
    wideTiles: tilesOf(plan.wideTiles, (s) => expanded.has(s)),
    absorbedTiles: tilesOf(plan.prefillTiles, (s) => !expanded.has(s)),
  };
}
