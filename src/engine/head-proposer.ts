import { READABLE_SAMPLING_PASSES, type Backend, type KvCache, type SampledTokens, type StepInputs, type Tensor } from '../backend/backend.ts';
import { KeelError } from '../errors.ts';
import type { HiddenStateTap } from '../models/causal-lm.ts';
import type { DraftHead } from '../models/draft-head.ts';
import { scoreDraw, topTokensDraw } from '../sampling/draw.ts';
import { describeBatch, type SequenceChunk } from '../step/batch.ts';
import { layerGroup, type LayerKvSpec } from '../step/kv-cache-layout.ts';
import type { GraphBatches } from './graph-batch.ts';
import type { Sequence } from './sequence.ts';
import { expandDepth, type Candidate, type DraftNode } from './tree-expansion.ts';

/** The head's cache: its layer's K/V, then the feature rows it drafts from. */
const HEAD_LAYER = 0;
const FEATURES = 1;

/** A sequence being drafted for: the index of its last sampled token, the drafts reserved for it, and the nodes so far. */
interface Drafting {
  seq: Sequence;
  root: number;
  size: number;
  nodes: DraftNode[];
  /** The nodes of the deepest depth, the next to expand. */
  frontier: number[];
}

/**
 * Drafts with a head over the target's hidden states (EAGLE, EAGLE-3, MTP), which keeps a paged
 * cache of its own indexed by the target's block ids: its layer's K/V, and the feature row of
 * every token the target ran (`storeFeatures`, after each forward), so a feature outlives its step
 * and follows its token's block through copy-on-write, tree compaction and swaps.
 *
 * The head's entry at position p reads the token at p + 1 and the feature of p. When a sequence
 * drafts, the head first catches up: it runs every position from the last it ran with the
 * target's features (its earlier drafts' entries are replaced) up to the one before the last
 * sampled token, whose output gives the first drafts. Then each depth runs the newest drafts with
 * the outputs of their parents as features: a chain one token at a time, chained on the device
 * (each pass reads the draft the pass before drew there; the host reads the chain at the end); a
 * tree (width > 1) as a token tree over everything drafted so far (recomputed, so that each node
 * sees its ancestors alone), each node at cache index root + its index, keeping the `width`
 * children of best path probability per depth (EAGLE-2's expansion, ranked on the host after each
 * depth; `expandDepth` defines the ranking). Drafts' outputs go to the feature rows of the slots
 * after the root, which the step's forward then overwrites with the target's own.
 *
 * A head entry depends on the token after its position: the entry of a sequence's last computed
 * token is written again once the next is known, so the KV manager makes that token's block
 * private first (`KvCacheManagerOptions.lookback`), and shared blocks are only ever rewritten with
 * the same values.
 */
export class HeadProposer {
  readonly head: DraftHead;
  readonly cache: KvCache;
  private readonly blockSize: number;
  private readonly width: number;
  /** Per sequence, how many leading positions hold head entries of the target's features. */
  private caughtUp = new WeakMap<Sequence, number>();
  private states: Tensor[] = [];

  constructor(head: DraftHead, cache: KvCache, blockSize: number, width: number) {
    this.head = head;
    this.cache = cache;
    this.blockSize = blockSize;
    this.width = width;
  }

  /** The layers of the head's cache (KvCacheLayout.layers): its attention, then its feature rows. */
  static cacheLayers(head: DraftHead): LayerKvSpec[] {
    return [head.kvLayer, { kind: 'rows', width: head.featureWidth }];
  }

  /** How many drafts a sequence gets at most `maxDepth` deep: a chain, or `width` per depth. */
  treeSize(maxDepth: number): number {
    return this.width * maxDepth;
  }

  /** What the target's next forward hands its hidden states to. */
  tap(): HiddenStateTap {
    this.states = [];
    const wanted = this.head.targetStates;
    if (wanted.kind === 'final') return { tokenFinalRows: (hidden) => (this.states = [hidden]) };
    return { layerInputs: { layers: wanted.layers, receive: (states) => (this.states = states) } };
  }

  /**
   * After the target's forward over `step`: every token's feature row, at its slot (read on the
   * device, so that a replayed graph of the forward and this writes each step's rows in place).
   */
  storeFeatures(b: Backend, step: StepInputs): void {
    if (step.batch.numTokens === 0) return;
    if (this.states.length === 0) throw new Error(`the target's forward handed the ${this.head.name} head no hidden states`);
    b.writeStepCacheRows(this.cache, FEATURES, this.head.features(b, this.states), step);
  }

  /** A sequence preempted by recompute: its blocks are gone, so is every head entry. */
  forget(seq: Sequence): void {
    this.caughtUp.delete(seq);
  }

  /**
   * Fills each sequence's reserved drafts. They sample on the backend: no scheduled sequence may
   * have a pending token. A chain's single-token passes replay graphs padded by `graphs` (null:
   * eagerly).
   */
  propose(b: Backend, seqs: readonly Sequence[], graphs: GraphBatches | null): void {
    if (seqs.length === 0) return;
    const drafting: Drafting[] = seqs.map((seq) => ({ seq, root: seq.numTokens - seq.numDraftTokens - 1, size: seq.numDraftTokens, nodes: [], frontier: [] }));
    for (const d of drafting) if (d.root < 1) throw new Error(`sequence ${d.seq.id} drafts before it has a token to draft after`);
    if (this.width === 1) {
      this.draftChains(b, drafting, graphs);
      return;
    }
    const logits = this.catchUp(b, drafting);
    const candidates = this.candidates(b, logits, drafting.length);
    drafting.forEach((d, i) => this.keep(d, [-1], [candidates[i]]));
    for (let active = drafting.filter((d) => d.nodes.length < d.size); active.length > 0; active = active.filter((d) => d.nodes.length < d.size)) {
      this.expand(b, active);
    }
    for (const { seq, nodes } of drafting) seq.setDraftTree(nodes.map((n) => n.token), nodes.map((n) => n.parent));
  }

  /**
   * Runs each sequence's positions from the first without a target-fed entry through the one
   * before its root; that position's output is the first depth's feature, and the logits it
   * returns (a row per sequence) give the first depth's nodes.
   */
  private catchUp(b: Backend, drafting: Drafting[]): Tensor {
    const chunks = drafting.map(({ seq, root }): SequenceChunk => {
      const from = Math.min(this.caughtUp.get(seq) ?? 0, root - 1);
      return { tokens: seq.tokenIds.slice(from + 1, root + 1), startPos: from, blockTables: seq.blockTables };
    });
    // Its last position is the one before the root: its output goes to the root's slot.
    const logits = this.runInPlace(b, chunks, null);
    for (const d of drafting) this.caughtUp.set(d.seq, d.root);
    return logits;
  }

  /**
   * The head over `chunks`, each token reading the feature row at its own slot, and each
   * sequence's output (on its last token) written to the slot after it, where the next position
   * reads it: the step's own slots, found on the device, so a single-token pass can replay a
   * graph (`graphs`). Returns the logits, a row per sequence.
   */
  private runInPlace(b: Backend, chunks: SequenceChunk[], graphs: GraphBatches | null): Tensor {
    const size = graphs?.sizeFor(chunks.length) ?? null;
    const step = b.beginStep(size === null ? describeBatch(chunks, this.blockSize) : graphs!.padded(chunks, size));
    const forward = (): Tensor => {
      const { hidden, logits } = this.head.forward(b, step, this.cache, b.readStepCacheRows(this.cache, FEATURES, step));
      b.writeNextCacheRows(this.cache, FEATURES, hidden, step);
      return logits;
    };
    return size === null ? forward() : b.replayForward(step, this, forward);
  }

  /**
   * Chains (width 1), drafted on the device: after the catch-up, depth j runs draft j - 1 (read
   * where the pass before drew it, `SequenceChunk.lastTokenSource`, mapped to the target's ids on
   * the device for a head of its own vocabulary) with the output the pass before left at its
   * position as feature, and draws draft j as the argmax of its logits; each such pass is one
   * token per sequence and replays a graph where decode steps do. The host reads the drafts once,
   * after the last pass (in groups of the passes that stay readable).
   */
  private draftChains(b: Backend, drafting: Drafting[], graphs: GraphBatches | null): void {
    const map = this.head.draftToTarget;
    let unread: { sampled: SampledTokens; active: Drafting[]; depth: number }[] = [];
    const readPasses = () => {
      for (const { sampled, active, depth } of unread) {
        const { tokenIds } = sampled.read();
        active.forEach((d, row) => {
          const id = tokenIds[row];
          if (id < 0) throw new KeelError('backend', `the ${this.head.name} head gave no draft to propose`);
          d.seq.setDraftToken(depth, map === null ? id : map[id]);
        });
      }
      unread = [];
    };
    const draw = (logits: Tensor, active: Drafting[], depth: number) => {
      if (unread.length === READABLE_SAMPLING_PASSES) readPasses();
      unread.push({ sampled: b.sampleRows(logits, active.map((_, row) => topTokensDraw(row, 1))), active, depth });
      if (map !== null) b.mapSampledIds(map);
    };
    draw(this.catchUp(b, drafting), drafting, 0);
    for (let depth = 1, active = drafting; ; depth++) {
      // Each sequence's row in the pass before: where its draft depth - 1 was drawn.
      const rows = new Map(active.map((d, row) => [d, row]));
      active = active.filter((d) => d.size > depth);
      if (active.length === 0) break;
      // Position root + depth - 1 runs with the token after it, draft depth - 1, and as feature the output the pass before left there.
      const chunks = active.map((d): SequenceChunk => ({ tokens: [0], startPos: d.root + depth - 1, blockTables: d.seq.blockTables, lastTokenSource: rows.get(d)! }));
      draw(this.runInPlace(b, chunks, graphs), active, depth);
    }
    readPasses();
  }

  /**
   * Runs the frontier of each sequence's tree and keeps the next depth's nodes: the host reads
   * each depth's candidates, which it ranks by path probability.
   */
  private expand(b: Backend, drafting: Drafting[]): void {
    const slots: number[] = [];
    const rows: number[] = [];
    let numTokens = 0;
    const chunks = drafting.map(({ seq, root, nodes, frontier }): SequenceChunk => {
      const feature = (node: number) => this.slot(seq, nodes[node].parent < 0 ? root : root + 1 + nodes[node].parent);
      // The tree runs again from the root's predecessor, each node seeing its ancestors alone.
      slots.push(this.slot(seq, root - 1), ...nodes.map((_, i) => feature(i)));
      rows.push(...frontier.map((node) => numTokens + 1 + node));
      numTokens += 1 + nodes.length;
      return { tokens: [seq.tokenIds[root], ...nodes.map((n) => n.token)], startPos: root - 1, blockTables: seq.blockTables, treeParents: [-1, ...nodes.map((n) => n.parent + 1)] };
    });
    const { hidden, logits } = this.run(b, chunks, Int32Array.from(slots), rows);
    b.writeCacheRows(this.cache, FEATURES, hidden, Int32Array.from(drafting.flatMap(({ seq, root, frontier }) => frontier.map((node) => this.slot(seq, root + 1 + node)))));
    const candidates = this.candidates(b, logits, rows.length);
    let row = 0;
    for (const d of drafting) this.keep(d, d.frontier, candidates.slice(row, (row += d.frontier.length)));
  }

  /** The head over `chunks` with the feature rows of `slots`, its outputs on `logitsRows`. */
  private run(b: Backend, chunks: SequenceChunk[], slots: Int32Array, logitsRows: number[]): { hidden: Tensor; logits: Tensor } {
    const step = b.beginStep(describeBatch(chunks, this.blockSize, logitsRows));
    return this.head.forward(b, step, this.cache, b.readCacheRows(this.cache, FEATURES, slots));
  }

  /** The `width` most likely tokens of each logits row, as target ids with their log-probabilities. */
  private candidates(b: Backend, logits: Tensor, numRows: number): Candidate[][] {
    const { topIds, topLogprobs, topWidth } = b.sampleRows(logits, Array.from({ length: numRows }, (_, row) => scoreDraw(row, 0, this.width))).read();
    const map = this.head.draftToTarget;
    return Array.from({ length: numRows }, (_, row) =>
      Array.from({ length: this.width }, (_, rank) => {
        const id = topIds[row * topWidth + rank];
        if (id < 0) throw new KeelError('backend', `the ${this.head.name} head gave no candidate of rank ${rank}`);
        return { token: map === null ? id : map[id], logprob: topLogprobs[row * topWidth + rank] };
      }),
    );
  }

  /**
   * Appends the `width` best children of `frontier` (by path probability: `expandDepth`) as the
   * next depth, within the sequence's reserved drafts.
   */
  private keep(d: Drafting, frontier: number[], candidates: Candidate[][]): void {
    const kept = expandDepth(d.nodes, frontier, candidates, Math.min(this.width, d.size - d.nodes.length));
    d.frontier = kept.map((_, i) => d.nodes.length + i);
    d.nodes.push(...kept);
  }

  /** The KV group the feature rows belong to: their slots are that group's. */
  private get featureGroup(): number {
    return layerGroup(this.cache.layout, FEATURES);
  }

  private slot(seq: Sequence, index: number): number {
    return seq.blockTables[this.featureGroup][Math.floor(index / this.blockSize)] * this.blockSize + (index % this.blockSize);
  }
}
