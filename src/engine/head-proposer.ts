import type { Backend, DraftTrees, KvCache, StepInputs, Tensor } from '../backend/backend.ts';
import { KeelError } from '../errors.ts';
import type { HiddenStateTap } from '../models/causal-lm.ts';
import type { DraftHead } from '../models/draft-head.ts';
import { scoreDraw } from '../sampling/draw.ts';
import { describeBatch, type SequenceChunk } from '../step/batch.ts';
import { layerGroup, type LayerKvSpec } from '../step/kv-cache-layout.ts';
import type { GraphBatches } from './graph-batch.ts';
import type { Sequence } from './sequence.ts';

/** The head's cache: its layer's K/V, then the feature rows it drafts from. */
const HEAD_LAYER = 0;
const FEATURES = 1;

/** A sequence being drafted for: the index of its last sampled token and the drafts reserved for it. */
interface Drafting {
  seq: Sequence;
  root: number;
  size: number;
}

/**
 * What the host knows of a tree grown on the device: its node count and latest depth's (the
 * frontier), and for each node a parent of the right depth (the first node of the depth above),
 * which places it (its position) while the device writes its real ancestors into the tree mask.
 */
interface TreeShape {
  count: number;
  frontier: number;
  placeParents: number[];
}

/**
 * A chain's drafts left on the device for the verification that follows their drafting: its
 * chunks read them where `sources` says (`SequenceChunk.tokenSources`), so the host need not wait
 * for the drafting passes before it launches the verification, and `read` gives them to their
 * sequences once the step is read.
 */
export interface DraftsOnDevice {
  /** Per drafting sequence, where each of its drafts lies for the next step's tokenSources. */
  sources: Map<Sequence, number[]>;
  /** Waits for the device and sets each sequence's drafts. */
  read(): void;
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
 * (each pass reads the draft the pass before drew there; the host reads the chain at the end, or
 * with the verification that reads it on the device: `DraftsOnDevice`); a
 * tree (width > 1) as a token tree over everything drafted so far (recomputed, so that each node
 * sees its ancestors alone), each node at cache index root + its index, keeping the `width`
 * children of best path probability per depth (EAGLE-2's expansion, ranked on the device:
 * `Backend.expandDraftTrees`; the host reads the trees once, after the last depth). Drafts'
 * outputs go to the feature rows of the slots after the root, which the step's forward then
 * overwrites with the target's own.
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
   * eagerly). With `leaveOnDevice`, chains stay on the device for the step's verification to read
   * (the returned DraftsOnDevice); trees, and chains otherwise, are read before this returns (null).
   */
  propose(b: Backend, seqs: readonly Sequence[], graphs: GraphBatches | null, leaveOnDevice = false): DraftsOnDevice | null {
    if (seqs.length === 0) return null;
    const drafting: Drafting[] = seqs.map((seq) => ({ seq, root: seq.numTokens - seq.numDraftTokens - 1, size: seq.numDraftTokens }));
    for (const d of drafting) if (d.root < 1) throw new Error(`sequence ${d.seq.id} drafts before it has a token to draft after`);
    if (this.width > 1) {
      this.draftTrees(b, drafting);
      return null;
    }
    const chains = this.draftChains(b, drafting, graphs);
    if (leaveOnDevice) return chains;
    chains.read();
    return null;
  }

  /**
   * Runs each sequence's positions from the first without a target-fed entry through the one
   * before its root; that position's output is the first depth's feature, and the logits it
   * returns (a row per sequence) give the first depth's nodes. After a verification each sequence
   * catches up over what it kept (its last sampled token, and its accepted drafts): where every
   * sequence catches up over as many tokens, no more than a chain holds, the pass replays a graph
   * padded by `graphs` (its eager launches cost about as much as the pass's own device time); a
   * first catch-up over a prompt, and uneven ones, run eagerly.
   */
  private catchUp(b: Backend, drafting: Drafting[], graphs: GraphBatches | null): Tensor {
    const chunks = drafting.map(({ seq, root }): SequenceChunk => {
      const from = Math.min(this.caughtUp.get(seq) ?? 0, root - 1);
      return { tokens: seq.tokenIds.slice(from + 1, root + 1), startPos: from, blockTables: seq.blockTables };
    });
    const rowTokens = chunks[0].tokens.length;
    const even = rowTokens <= Math.max(...drafting.map((d) => d.size)) + 1 && chunks.every((c) => c.tokens.length === rowTokens);
    // Its last position is the one before the root: its output goes to the root's slot.
    const logits = this.runInPlace(b, chunks, even ? graphs : null, rowTokens);
    for (const d of drafting) this.caughtUp.set(d.seq, d.root);
    return logits;
  }

  /**
   * The head over `chunks`, each token reading the feature row at its own slot, and each
   * sequence's output (on its last token) written to the slot after it, where the next position
   * reads it: the step's own slots, found on the device, so a pass whose chunks are all of
   * `rowTokens` tokens can replay a graph (`graphs`). Returns the logits, a row per sequence.
   */
  private runInPlace(b: Backend, chunks: SequenceChunk[], graphs: GraphBatches | null, rowTokens = 1): Tensor {
    const size = graphs?.sizeFor(chunks.length) ?? null;
    const step = b.beginStep(size === null ? describeBatch(chunks, this.blockSize) : graphs!.padded(chunks, size, rowTokens, 'last'));
    const forward = (): Tensor => {
      const { hidden, logits } = this.head.forward(b, step, this.cache, b.readStepCacheRows(this.cache, FEATURES, step));
      b.writeNextCacheRows(this.cache, FEATURES, hidden, step);
      return logits;
    };
    return size === null ? forward() : b.replayForward(step, this, forward);
  }

  /**
   * Chains (width 1), drafted on the device: after the catch-up, depth j runs draft j - 1 (read
   * where the pass before left it, `SequenceChunk.lastTokenSource`) with the output the pass before
   * left at its position as feature, and keeps the argmax of its logits as draft j. Each chain is
   * kept as a tree of one node a depth (`expandDraftTrees` keeping each newest node's best
   * candidate, mapped to the target's ids for a head of its own vocabulary): sequence t's draft i
   * lies at t · size + i, where the next pass reads its newest draft and the verification all of
   * them. Each pass after the catch-up is one token per sequence and replays a graph where decode
   * steps do. No pass is read here: the host reads the chains once, with `read`.
   */
  private draftChains(b: Backend, drafting: Drafting[], graphs: GraphBatches | null): DraftsOnDevice {
    const size = Math.max(...drafting.map((d) => d.size));
    const trees = b.beginDraftTrees(drafting.length, size);
    // The chains growing at `depth` (their rows in the pass, in order) keep their best candidate as node `depth`.
    const keep = (logits: Tensor, growing: number[], depth: number) => {
      b.sampleRows(logits, growing.map((_, row) => scoreDraw(row, 0, 1)));
      const counts = Int32Array.from(drafting, (d) => Math.min(depth, d.size));
      const keeps = new Int32Array(drafting.length);
      const rows = new Int32Array(drafting.length);
      growing.forEach((t, row) => {
        keeps[t] = 1;
        rows[t] = row;
      });
      b.expandDraftTrees(trees, { counts, frontiers: counts.map((count) => Math.min(count, 1)), keeps, rows }, this.head.draftToTarget);
    };
    keep(this.catchUp(b, drafting, graphs), drafting.map((_, t) => t), 0);
    for (let depth = 1; ; depth++) {
      const growing = drafting.flatMap((d, t) => (d.size > depth ? [t] : []));
      if (growing.length === 0) break;
      // Position root + depth - 1 runs with draft depth - 1, and as feature the output the pass before left there.
      const chunks = growing.map((t): SequenceChunk => {
        const { seq, root } = drafting[t];
        return { tokens: [0], startPos: root + depth - 1, blockTables: seq.blockTables, lastTokenSource: t * size + depth - 1 };
      });
      keep(this.runInPlace(b, chunks, graphs), growing, depth);
    }
    return {
      sources: new Map(drafting.map((d, t) => [d.seq, Array.from({ length: d.size }, (_, i) => t * size + i)])),
      read: () => {
        const { tokens } = trees.read();
        drafting.forEach(({ seq, size: n }, t) => {
          for (let i = 0; i < n; i++) {
            const id = tokens[t * size + i];
            if (id < 0) throw new KeelError('backend', `the ${this.head.name} head gave no draft to propose`);
            seq.setDraftToken(i, id);
          }
        });
      },
    };
  }

  /**
   * Trees (width > 1), grown on the device: after the catch-up, each depth samples the `width`
   * best candidates of every frontier row (`scoreDraw`), and `expandDraftTrees` keeps each tree's
   * `width` children of best path probability and leaves the trees' tokens where the next pass
   * embeds them (`SequenceChunk.tokenSources`); that pass runs each tree again from the root's
   * predecessor, its mask and feature rows picked on the device from the parents. The host knows
   * every depth's node count, so it lays out the passes without reading them, and reads the trees
   * once, after the last depth.
   */
  private draftTrees(b: Backend, drafting: Drafting[]): void {
    const size = Math.max(...drafting.map((d) => d.size));
    const trees = b.beginDraftTrees(drafting.length, size);
    const shapes: TreeShape[] = drafting.map(() => ({ count: 0, frontier: 0, placeParents: [] }));
    // Each depth's pass holds a row per frontier node (the root's, at the first) of the trees that grow.
    const expand = (logits: Tensor, growing: number[]) => {
      const rows = new Int32Array(drafting.length);
      let numRows = 0;
      for (const t of growing) {
        rows[t] = numRows;
        numRows += Math.max(1, shapes[t].frontier);
      }
      b.sampleRows(logits, Array.from({ length: numRows }, (_, row) => scoreDraw(row, 0, this.width)));
      const keeps = Int32Array.from(drafting, (d, t) => (growing.includes(t) ? Math.min(this.width, d.size - shapes[t].count) : 0));
      b.expandDraftTrees(trees, { counts: Int32Array.from(shapes, (sh) => sh.count), frontiers: Int32Array.from(shapes, (sh) => sh.frontier), keeps, rows }, this.head.draftToTarget);
      for (const t of growing) {
        const shape = shapes[t];
        const first = shape.frontier === 0 ? -1 : shape.count - shape.frontier;
        shape.placeParents.push(...Array.from({ length: keeps[t] }, () => first));
        shape.count += keeps[t];
        shape.frontier = keeps[t];
      }
    };
    expand(this.catchUp(b, drafting, null), drafting.map((_, t) => t));
    for (let growing = this.growing(drafting, shapes); growing.length > 0; growing = this.growing(drafting, shapes)) {
      expand(this.treePass(b, trees, drafting, shapes, growing), growing);
    }
    const { tokens, parents } = trees.read();
    drafting.forEach(({ seq, size: n }, t) => {
      const at = t * size;
      if (tokens.subarray(at, at + n).some((id) => id < 0)) throw new KeelError('backend', `the ${this.head.name} head gave no candidate for a node of sequence ${seq.id}'s tree`);
      seq.setDraftTree(Array.from(tokens.subarray(at, at + n)), Array.from(parents.subarray(at, at + n)));
    });
  }

  /** The trees that have not yet filled their reserved drafts. */
  private growing(drafting: Drafting[], shapes: TreeShape[]): number[] {
    return drafting.flatMap((d, t) => (shapes[t].count < d.size ? [t] : []));
  }

  /**
   * One depth's pass over the `growing` trees: each runs again from the root's predecessor (each
   * node seeing its ancestors alone), its nodes' tokens read where `expandDraftTrees` left them,
   * its frontier's outputs written to the frontier's feature rows. Returns the frontier's logits.
   */
  private treePass(b: Backend, trees: DraftTrees, drafting: Drafting[], shapes: TreeShape[], growing: number[]): Tensor {
    const slots: number[] = [];
    const rows: number[] = [];
    const frontierSlots: number[] = [];
    let numTokens = 0;
    const chunks = growing.map((t): SequenceChunk => {
      const { seq, root } = drafting[t];
      const { count, frontier, placeParents } = shapes[t];
      // Cache indices root - 1 .. root + count: the root's predecessor's feature, then the root's and each node's.
      for (let index = root - 1; index <= root + count; index++) slots.push(this.slot(seq, index));
      for (let node = count - frontier; node < count; node++) {
        rows.push(numTokens + 1 + node);
        frontierSlots.push(this.slot(seq, root + 1 + node));
      }
      numTokens += 1 + count;
      return {
        tokens: [seq.tokenIds[root], ...placeParents.map(() => 0)],
        tokenSources: [-1, ...placeParents.map((_, node) => t * trees.size + node)],
        startPos: root - 1,
        blockTables: seq.blockTables,
        treeParents: [-1, ...placeParents.map((parent) => parent + 1)],
      };
    });
    const step = b.beginStep(describeBatch(chunks, this.blockSize, rows));
    const chunkTrees = Int32Array.from(growing);
    b.writeDraftTreeMask(trees, step, chunkTrees);
    const features = b.readDraftTreeCacheRows(this.cache, FEATURES, trees, step, chunkTrees, Int32Array.from(slots));
    const { hidden, logits } = this.head.forward(b, step, this.cache, features);
    b.writeCacheRows(this.cache, FEATURES, hidden, Int32Array.from(frontierSlots));
    return logits;
  }

  /** The KV group the feature rows belong to: their slots are that group's. */
  private get featureGroup(): number {
    return layerGroup(this.cache.layout, FEATURES);
  }

  private slot(seq: Sequence, index: number): number {
    return seq.blockTables[this.featureGroup][Math.floor(index / this.blockSize)] * this.blockSize + (index % this.blockSize);
  }
}
