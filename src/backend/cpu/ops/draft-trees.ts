import type { DraftTreeDepth, DraftTreeNodes } from '../../backend.ts';
import type { DrawResults } from '../../../sampling/draw.ts';
import type { BatchDescription } from '../../../step/batch.ts';
import { expandDepth, type DraftNode } from './tree-expansion.ts';

/**
 * One depth of every growing tree (`Backend.expandDraftTrees`): `nodes` holds [numTrees, size]
 * nodes, `pass` the latest sampling pass, whose rows hold the frontiers' candidates.
 */
export function expandDraftTrees(nodes: DraftTreeNodes, size: number, depth: DraftTreeDepth, pass: DrawResults, map: Int32Array | null): void {
  const { topIds, topLogprobs, topWidth } = pass;
  depth.keeps.forEach((keep, t) => {
    if (keep === 0) return;
    const count = depth.counts[t];
    const base = t * size;
    const tree: DraftNode[] = Array.from({ length: count }, (_, i) => ({ token: nodes.tokens[base + i], parent: nodes.parents[base + i], logprob: nodes.logprobs[base + i] }));
    const numFrontier = depth.frontiers[t];
    const frontier = numFrontier === 0 ? [-1] : Array.from({ length: numFrontier }, (_, f) => count - numFrontier + f);
    const candidates = frontier.map((_, f) =>
      Array.from({ length: topWidth }, (_, rank) => {
        const at = (depth.rows[t] + f) * topWidth + rank;
        const id = topIds[at];
        return { token: id < 0 || map === null ? id : id < map.length ? map[id] : -1, logprob: topLogprobs[at] };
      }),
    );
    expandDepth(tree, frontier, candidates, keep).forEach((node, i) => {
      nodes.tokens[base + count + i] = node.token;
      nodes.parents[base + count + i] = node.parent;
      nodes.logprobs[base + count + i] = node.logprob;
    });
  });
}

/** Chunk s's tree: the trees' parents from tree chunkTrees[s]'s node 0 (chunk token k ≥ 1 is node k - 1). */
function chunkParents(parents: Int32Array, size: number, chunkTrees: Int32Array, s: number): (node: number) => number {
  const base = chunkTrees[s] * size;
  return (node) => parents[base + node];
}

/** `Backend.writeDraftTreeMask` on the step's host arrays (the CPU's step is its BatchDescription). */
export function writeDraftTreeMask(batch: BatchDescription, parents: Int32Array, size: number, chunkTrees: Int32Array): void {
  const { treeMask: mask, treeMaskWords: words, queryStartLoc } = batch;
  for (let s = 0; s < batch.numSeqs; s++) {
    const parent = chunkParents(parents, size, chunkTrees, s);
    const start = queryStartLoc[s];
    for (let k = 1; k < queryStartLoc[s + 1] - start; k++) {
      const row = (start + k) * words;
      mask!.fill(0, row, row + words);
      for (let j = k; ; j = parent(j - 1) + 1) {
        mask![row + (j >> 5)] |= 1 << (j & 31);
        if (j === 0) break;
      }
    }
  }
}

/** The slot each token of the step's draft-tree chunks reads its feature from (`Backend.readDraftTreeCacheRows`). */
export function draftTreeSlots(batch: BatchDescription, parents: Int32Array, size: number, chunkTrees: Int32Array, slots: Int32Array): Int32Array {
  const out = new Int32Array(batch.numTokens);
  for (let s = 0; s < batch.numSeqs; s++) {
    const parent = chunkParents(parents, size, chunkTrees, s);
    const start = batch.queryStartLoc[s];
    // Chunk s's slots start after one extra slot per chunk before it.
    const base = start + s;
    for (let k = 0; k < batch.queryStartLoc[s + 1] - start; k++) out[start + k] = slots[base + (k === 0 ? 0 : parent(k - 1) + 2)];
  }
  return out;
}
