import { READABLE_SAMPLING_PASSES, type Backend, type SampledTokens, type Tensor } from '../backend/backend.ts';
import { invalidArgument, KeelError } from '../errors.ts';
import type { MedusaHeads } from '../models/medusa-heads.ts';
import { scoreDraw, type DrawResults } from '../sampling/draw.ts';
import type { Sequence } from './sequence.ts';

/** Most candidates a head's ranks reach: a sampling pass reports at most 20 top tokens. */
const MAX_RANK = 20;

/**
 * A static draft tree in Medusa's form: each path a list of ranks, [2, 0] being the best candidate
 * of the second head under the third candidate of the first; every path's prefix is a path too.
 * Listed by depth, so that any first n paths are a tree.
 */
export interface StaticTree {
  /** Per node: its depth (1 = a child of the last sampled token), its rank, its parent (-1 or a node). */
  depths: number[];
  ranks: number[];
  parents: number[];
}

/**
 * A sparse tree favouring the first candidates, as Medusa's published trees do: 4 candidates for
 * the next token, the best few continuations of the best ones below (15 drafts over 5 depths).
 */
export const DEFAULT_MEDUSA_TREE: readonly (readonly number[])[] = [
  [0], [1], [2], [3],
  [0, 0], [0, 1], [1, 0], [0, 2], [2, 0],
  [0, 0, 0], [0, 0, 1], [1, 0, 0],
  [0, 0, 0, 0], [0, 0, 0, 1],
  [0, 0, 0, 0, 0],
];

/** The tree of `paths` (Medusa's choices), cut to `maxDepth`, checked: ranks below 20, every prefix present. */
export function staticTree(paths: readonly (readonly number[])[], maxDepth: number): StaticTree {
  const kept = paths.filter((p) => p.length <= maxDepth).map((p) => [...p]);
  kept.sort((a, b) => a.length - b.length || compareRanks(a, b));
  const index = new Map(kept.map((p, i) => [p.join(','), i]));
  const tree: StaticTree = { depths: [], ranks: [], parents: [] };
  for (const path of kept) {
    if (path.length === 0 || path.some((r) => !(Number.isInteger(r) && r >= 0 && r < MAX_RANK))) {
      throw invalidArgument(`draft tree path [${path.join(', ')}]: each path is 1 or more ranks from 0 to ${MAX_RANK - 1}`);
    }
    const parent = path.length === 1 ? -1 : index.get(path.slice(0, -1).join(','));
    if (parent === undefined) throw invalidArgument(`draft tree path [${path.join(', ')}] has no path [${path.slice(0, -1).join(', ')}] above it`);
    tree.depths.push(path.length);
    tree.ranks.push(path[path.length - 1]);
    tree.parents.push(parent);
  }
  return tree;
}

function compareRanks(a: readonly number[], b: readonly number[]): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return 0;
}

/**
 * Drafts with Medusa heads. Each step's forward hands over the LM head's input rows (`received`); a
 * sequence's proposal reads the row of its last accepted token: the token after it was drawn
 * from that row, and head k's candidates there are for the k + 2nd token on, so node (depth d,
 * rank r) of the static tree gets head d - 1's r-th most likely token. The rows live until the
 * next step begins: proposals run first in a step, before any forward.
 */
export class MedusaProposer {
  private readonly heads: MedusaHeads;
  private readonly tree: StaticTree;
  /** The latest forward's LM-head input rows, and each sampled sequence's row of its last accepted token. */
  private hidden: Tensor | null = null;
  private rows = new Map<Sequence, number>();

  constructor(heads: MedusaHeads, paths: readonly (readonly number[])[]) {
    this.heads = heads;
    this.tree = staticTree(paths, heads.config.numHeads);
    if (this.tree.depths.length === 0) throw invalidArgument(`the draft tree has no path within the ${heads.config.numHeads} Medusa heads`);
  }

  /**
   * The latest forward's LM-head input rows (`HiddenStateTap.finalRows`, or a replayed graph's
   * recording of them; null when the forward handed none over); `rows` names each sampled
   * sequence's row in them.
   */
  received(hidden: Tensor | null, rows: Map<Sequence, number>): void {
    this.hidden = hidden;
    this.rows = rows;
  }

  /**
   * The sequence's last accepted token is its draft `index` of the latest forward: its row follows
   * the row of the sequence's last sampled token by 1 + index.
   */
  acceptDraft(seq: Sequence, index: number): void {
    const row = this.rows.get(seq);
    if (row !== undefined) this.rows.set(seq, row + 1 + index);
  }

  /** How many drafts the sequence would get at most `maxDepth` deep: 0 when the latest forward did not sample it. */
  treeSize(seq: Sequence, maxDepth: number): number {
    if (this.hidden === null || !this.rows.has(seq)) return 0;
    let n = 0;
    while (n < this.tree.depths.length && this.tree.depths[n] <= maxDepth) n++;
    return n;
  }

  /** Fills each sequence's reserved drafts with the first of the tree's nodes. */
  propose(b: Backend, seqs: readonly Sequence[]): void {
    if (seqs.length === 0) return;
    const hidden = this.hidden;
    if (hidden === null) throw new Error('Medusa proposals need the latest forward\'s hidden rows');
    const rows = Int32Array.from(seqs, (seq) => {
      const row = this.rows.get(seq);
      if (row === undefined) throw new Error(`sequence ${seq.id} was not sampled by the latest forward: it has no hidden row to draft from`);
      return row;
    });
    const deepest = Math.max(...seqs.map((seq) => this.tree.depths[seq.numDraftTokens - 1]));
    const logits = this.heads.forward(b, b.gatherRows(hidden, rows)).slice(0, deepest);
    // Head k's candidates for every sequence: as many as the tree's ranks at depth k + 1 reach.
    // The heads' passes are all launched before the host reads them (as many at a time as stay readable).
    const candidates: DrawResults[] = [];
    const unread: SampledTokens[] = [];
    logits.forEach((headLogits, k) => {
      if (unread.length === READABLE_SAMPLING_PASSES) candidates.push(...unread.splice(0).map((pass) => pass.read()));
      const width = 1 + Math.max(...this.tree.ranks.filter((_, i) => this.tree.depths[i] === k + 1));
      unread.push(b.sampleRows(headLogits, seqs.map((_, row) => scoreDraw(row, 0, width))));
    });
    candidates.push(...unread.map((pass) => pass.read()));
    seqs.forEach((seq, s) => {
      const n = seq.numDraftTokens;
      const tokens = Array.from({ length: n }, (_, i) => {
        const { topIds, topWidth } = candidates[this.tree.depths[i] - 1];
        const token = topIds[s * topWidth + this.tree.ranks[i]];
        if (token < 0) throw new KeelError('backend', `Medusa head ${this.tree.depths[i] - 1} gave no candidate of rank ${this.tree.ranks[i]}`);
        return token;
      });
      seq.setDraftTree(tokens, this.tree.parents.slice(0, n));
    });
  }
}
