import { READABLE_SAMPLING_PASSES, type Backend, type KvCache, type SampledTokens, type StepInputs, type SwapSpace, type Tensor } from '../backend/backend.ts';
import { KeelError } from '../errors.ts';
import type { CausalLM } from '../models/causal-lm.ts';
import type { DraftsOnDevice, HeadProposer } from './head-proposer.ts';
import { queueHostTransfers, type HostTransfers } from './host-transfers.ts';
import type { MedusaProposer } from './medusa-proposer.ts';
import { scoreDraw, type Draw, type DrawResults } from '../sampling/draw.ts';
import { describeBatch, type BatchDescription, type SequenceChunk } from '../step/batch.ts';
import { GraphBatches, type GraphOptions } from './graph-batch.ts';
import type { LoraSlots } from './lora-slots.ts';
import { MicroBatchPipeline } from './micro-batch-pipeline.ts';
import type { Ranks } from './parallel/ranks.ts';
import type { SchedulerOutput } from './scheduler.ts';
import { UNPROPOSED_DRAFT, type Sequence } from './sequence.ts';
import type { StepTimeline } from './step-timeline.ts';

/**
 * A draft model for speculative decoding and its KV pools, indexed by the same block ids as the
 * target's: the block manager's allocation, prefix caching, copy-on-write and preemption cover
 * both at once, and every step the target runs, the draft runs too, so that its cache always holds
 * the K/V of the tokens the target's does. Self-speculation's draft (the target's first layers,
 * `CausalLM.earlyExit`) runs on the target's own cache: the target's forward writes the K/V of
 * those layers for every token, exactly as the draft would, so it runs only its proposal passes.
 */
export interface DraftModel {
  model: CausalLM;
  cache: KvCache;
}

/**
 * Host memory of one kind (swapped-out blocks, or the prefix cache's host tier): one swap space per
 * KV cache (the target's, a draft model's own, the head's), indexed by the same host block ids.
 */
export interface SwapSpaces {
  target: SwapSpace;
  draft: SwapSpace | null;
  head: SwapSpace | null;
}

/** How decoding sequences draft in the runner: a draft model, Medusa heads, or a head over hidden states (EAGLE, MTP). */
export interface RunnerDrafting {
  draft?: DraftModel | null;
  medusa?: MedusaProposer | null;
  head?: HeadProposer | null;
}

/** Where a sampled row's draws read: its logits row, and the previous step's draw holding its pending token. */
export interface DrawSite {
  /**
   * The logits row after the sequence's last sampled token. A sequence with drafts has one more
   * row after each draft: row + i decides draft i, and row + numDraftTokens follows the last draft.
   */
  row: number;
  /** -1 when the sequence has no pending token. */
  pendingDraw: number;
}

/** A scored prompt position: draw `draw` holds the logprob of the token after `position`. */
export interface PromptScore {
  /** Index into `output.scheduled`. */
  s: number;
  position: number;
  draw: number;
}

/** What one step produced for the sequences that sample a token, and the prompt positions it scored. */
export interface StepResult {
  /** Index into `output.scheduled` of each sampled row. */
  samplingRows: number[];
  /** Sampled row i's draws are firstDraw[i], firstDraw[i] + 1, ..., in the order they were asked. */
  firstDraw: number[];
  promptScores: PromptScore[];
  /** The draws' results: reading waits for the step. Until then the step runs on while the host goes on. */
  read: () => DrawResults;
}

/** What the engine asks of each step's rows. */
export interface StepDraws {
  /**
   * The draws of scheduled sequence `s`'s row (n of them when a request forks into n
   * completions; none for a row nobody waits for): asked exactly once for each sequence that
   * samples this step, and for no other.
   */
  drawsFor(s: number, site: DrawSite): Draw[];
  /**
   * The draw that gives scheduled sequence `s`'s draft `index` from the draft model's logits row
   * `row` (the same draw verifies it on the target's logits): asked in index order. With
   * `historyRow` >= 0 the drafts before it lie in that row of the draft history, where the passes
   * before drew them (Draw.draftHistoryRow), and may still be unknown to the host; with -1 they
   * are proposed (read) before it is asked.
   */
  draftDraw(s: number, index: number, row: number, historyRow: number): Draw;
  /**
   * Whether scheduled sequence `s`'s draft draws read the drafts before them on the host (a
   * grammar's mask): the host must then read each drafting pass before the next asks its draw.
   * Otherwise a draft's draw is asked while the drafts before it are still on the device (its
   * penalties count them in the draft history).
   */
  draftDrawReadsDrafts(s: number): boolean;
  /**
   * Whether scheduled sequence `s`'s verification draws read its drafts on the host (a grammar's
   * mask, penalties): the drafts must then be read before the verification is launched. Otherwise
   * a head's chain stays on the device until the step is read.
   */
  verificationReadsDrafts(s: number): boolean;
  /**
   * For a sequence whose prompt positions are scored (`Sequence.needsPromptLogits`): how many top
   * alternatives each prompt logprob carries.
   */
  promptTopLogprobs(s: number): number;
}

/**
 * Turns the scheduler's decision into the flattened batch description and runs the model on it.
 * It owns no policy: which tokens run, and where their K/V go, was decided before it is called.
 * Decode steps are padded to a recorded batch size and block-table width and replayed as graphs
 * when the backend records them. With a draft model, it proposes the drafts the engine reserved
 * (UNPROPOSED_DRAFT) and runs every step's tokens through the draft model too.
 */
export class ModelRunner {
  private readonly backend: Backend;
  private readonly model: CausalLM;
  private readonly cache: KvCache;
  private readonly blockSize: number;
  private readonly graphs: GraphBatches | null;
  private readonly draft: DraftModel | null;
  private readonly swap: SwapSpaces | null;
  private readonly medusa: MedusaProposer | null;
  private readonly head: HeadProposer | null;
  private readonly lora: LoraSlots | null;
  /** Every cache block ids index (the target's, a separate draft model's, the head's): block copies and slot moves apply to each. */
  private readonly caches: KvCache[];
  private readonly hostCache: SwapSpaces | null;
  /** The other ranks of a parallel run, sent every step before this rank runs it; null on one device. */
  private readonly ranks: Ranks | null;
  /** With several micro-batches in flight over the pipeline stages: their launches and logits; null with one at a time. */
  private readonly pipeline: MicroBatchPipeline | null;
  /** Each sequence's first draw in the latest step's sampling pass: where its pending token is read. */
  private sampledDraws = new Map<Sequence, number>();

  constructor(
    backend: Backend,
    model: CausalLM,
    cache: KvCache,
    blockSize: number,
    graphs: GraphOptions | null = null,
    drafting: RunnerDrafting = {},
    swap: SwapSpaces | null = null,
    lora: LoraSlots | null = null,
    hostCache: SwapSpaces | null = null,
    ranks: Ranks | null = null,
    microBatches = 1,
  ) {
    const draft = drafting.draft ?? null;
    const head = drafting.head ?? null;
    const ownDraftCache = draft !== null && draft.cache !== cache;
    for (const spaces of [swap, hostCache]) {
      if (spaces !== null && (ownDraftCache !== (spaces.draft !== null) || (head === null) !== (spaces.head === null))) {
        throw new Error('a draft model with a cache of its own, and a head, copy blocks to host memory of their own, and only they');
      }
    }
    this.backend = backend;
    this.model = model;
    this.cache = cache;
    this.blockSize = blockSize;
    this.medusa = drafting.medusa ?? null;
    this.head = head;
    this.graphs = backend.recordsGraphs && graphs !== null ? new GraphBatches(graphs, blockSize) : null;
    this.draft = draft;
    this.swap = swap;
    this.lora = lora;
    this.caches = [cache, ...(ownDraftCache ? [draft.cache] : []), ...(head === null ? [] : [head.cache])];
    this.hostCache = hostCache;
    this.ranks = ranks;
    if (microBatches > 1 && (this.graphs !== null || draft !== null || this.medusa !== null || head !== null)) {
      throw new Error('micro-batches in flight run eagerly, without a draft model or heads');
    }
    this.pipeline = microBatches > 1 ? new MicroBatchPipeline(backend, model, cache, microBatches) : null;
  }

  /**
   * Queues the step's copies between device and host (SchedulerOutput.swapOut, hostCache, swapIn)
   * in every cache, in the order queueHostTransfers gives, on this rank and, first, on the other
   * ranks of a parallel run, each on its own shard. Called every step, whether or not it runs a forward.
   */
  transferBlocks(output: SchedulerOutput): void {
    // A sequence preempted by recompute loses its blocks, and the head entries in them.
    for (const seq of output.preempted) if (seq.status !== 'swapped') this.head?.forget(seq);
    const transfers: HostTransfers = { swapOut: output.swapOut, swapIn: output.swapIn, hostCache: output.hostCache };
    // Every step, as here: a rank's forward waits for its previous step's swap-ins too.
    if (this.swap !== null || this.hostCache !== null) this.ranks?.transferBlocks(transfers);
    queueHostTransfers(this.backend, this.hostPairs(this.swap), this.hostPairs(this.hostCache), transfers);
  }

  /** Each cache with its host space of one kind; none when there is none. */
  private hostPairs(spaces: SwapSpaces | null): [KvCache, SwapSpace][] {
    if (spaces === null) return [];
    // this.caches and the spaces list the same caches in the same order.
    const hostSpaces = [spaces.target, ...(spaces.draft === null ? [] : [spaces.draft]), ...(spaces.head === null ? [] : [spaces.head])];
    return this.caches.map((cache, i) => [cache, hostSpaces[i]]);
  }

  /**
   * How many drafts Medusa heads would propose for a sequence at most `maxDepth` deep (0: none,
   * or no heads): the engine reserves that many before scheduling, and the step fills them.
   */
  draftTreeSize(seq: Sequence, maxDepth: number): number {
    if (this.head !== null) return this.head.treeSize(maxDepth);
    return this.medusa?.treeSize(seq, maxDepth) ?? 0;
  }

  /**
   * Runs one step: the drafts the draft model proposes, the forward (the draft model's first,
   * keeping its cache level with the target's), then one sampling pass over the rows `draws`
   * asks for and the prompt positions it scores. Logits stay on the device. A `timeline` is told
   * where the host's phases change and marks the device's work around the forward and sampling.
   */
  execute(output: SchedulerOutput, draws: StepDraws, timeline: StepTimeline | null = null): StepResult {
    timeline?.launchStarts();
    if (output.blockCopies.src.length > 0) {
      for (const cache of this.caches) this.backend.copyBlocks(cache, output.blockCopies.src, output.blockCopies.dst);
    }
    // State layers are the target's alone: models that keep states draft by n-gram only, with no draft cache.
    if (output.stateCopies.src.length > 0) this.backend.copyStateSlots(this.caches[0], output.stateCopies.src, output.stateCopies.dst);
    // Medusa heads read the latest forward's hidden rows, which the next beginStep releases.
    if (this.medusa !== null) this.medusa.propose(this.backend, this.unproposed(output));
    const onDevice = this.head === null ? null : this.head.propose(this.backend, this.unproposed(output), this.graphs, this.leavesDraftsOnDevice(output, draws));
    const graphBatch = this.graphBatchSize(output);
    const loraSlots = this.assignLoraSlots(output);
    const draft = this.draft;
    if (draft !== null) this.proposeDrafts(draft, output, draws);
    if (draft !== null && draft.cache !== this.cache) {
      // The draft model proposes from the base model: its layers hold no adapters.
      const draftStep = this.backend.beginStep(this.describe(output, graphBatch, draft.model, null).batch);
      const forward = (): Tensor => draft.model.forward(this.backend, draftStep, draft.cache);
      if (graphBatch === null) forward();
      else this.backend.replayForward(draftStep, draft, forward);
    }
    const { batch, samplingRows, logitsRows, scoredRows } = this.describe(output, graphBatch, this.model, loraSlots, onDevice?.sources ?? null);
    timeline?.drawsStart();
    // The draws are asked before the forward: the other ranks of a parallel run get them with the step.
    const all: Draw[] = [];
    const promptScores = scoredRows.map(({ s, position, row }) => {
      const seq = output.scheduled[s].seq;
      all.push(scoreDraw(row, seq.tokenIds[position + 1], draws.promptTopLogprobs(s)));
      return { s, position, draw: all.length - 1 };
    });
    const sampledDraws = new Map<Sequence, number>();
    const firstDraw = samplingRows.map((s, i) => {
      const seq = output.scheduled[s].seq;
      const first = all.length;
      all.push(...draws.drawsFor(s, { row: logitsRows[i], pendingDraw: seq.hasPendingToken ? this.pendingTokenDraw(seq) : -1 }));
      if (all.length > first) sampledDraws.set(seq, first);
      return first;
    });
    this.ranks?.step(output, batch, all);
    timeline?.forwardStarts();
    const step = this.backend.beginStep(batch);
    this.sampledDraws = sampledDraws;
    if (this.pipeline !== null) return { samplingRows, firstDraw, promptScores, read: this.launchMicroBatch(step, all) };
    // What heads read of the forward is recorded with it: Medusa's hidden rows are among a graph's
    // results, and a head's feature rows are written at the step's slots on the device.
    let medusaRows: Tensor | null = null;
    const tap = this.medusa !== null ? { finalRows: (hidden: Tensor) => (medusaRows = hidden) } : this.head?.tap();
    const forward = () => {
      const logits = this.model.forward(this.backend, step, this.cache, tap);
      this.head?.storeFeatures(this.backend, step);
      return { logits, medusaRows };
    };
    const { logits, medusaRows: hidden } = graphBatch === null ? forward() : this.backend.replayForward(step, this, forward);
    timeline?.forwardEnds();
    if (this.medusa !== null) this.medusa.received(hidden, new Map(samplingRows.map((s, i) => [output.scheduled[s].seq, logitsRows[i]])));
    const sampled = this.backend.sampleRows(logits, all);
    timeline?.sampled();
    return { samplingRows, firstDraw, promptScores, read: this.reader(() => sampled, onDevice) };
  }

  /**
   * Whether a head's chains may stay on the device for this step's verification: no scheduled
   * sequence's verification draws read its drafts on the host, and the step runs on this device
   * alone (no other ranks, no pipeline, which would need the drafts with the step).
   */
  private leavesDraftsOnDevice(output: SchedulerOutput, draws: StepDraws): boolean {
    if (this.ranks !== null || this.pipeline !== null) return false;
    return output.scheduled.every(({ seq }, s) => seq.numDraftTokens === 0 || !draws.verificationReadsDrafts(s));
  }

  /**
   * Launches a micro-batch on the first pipeline stage (MicroBatchPipeline); reading its tokens
   * first receives the logits of every micro-batch sent before it that has not come back yet, and
   * its own, each rank of the stage doing the same (Ranks.receiveLogits).
   */
  private launchMicroBatch(step: StepInputs, draws: Draw[]): () => DrawResults {
    const pipeline = this.pipeline!;
    const launched = pipeline.launch(step, draws);
    return this.reader(() => {
      while (launched.sampled === null) {
        this.ranks?.receiveLogits();
        pipeline.receiveOldest();
      }
      return launched.sampled;
    });
  }

  /** Reads a step's draws once, however often asked, and gives the sequences their drafts still on the device (`onDevice`). */
  private reader(sampled: () => SampledTokens, onDevice: DraftsOnDevice | null = null): () => DrawResults {
    let results: DrawResults | null = null;
    const read = (): DrawResults => {
      let drawn: DrawResults;
      try {
        drawn = sampled().read();
        onDevice?.read();
      } finally {
        // A wait that a dead rank cut short (its collectives aborted) read nothing worth keeping, nor failed for any other reason.
        this.ranks?.throwIfFailed();
      }
      return drawn;
    };
    return () => (results ??= read());
  }

  /**
   * Fills the drafts the engine reserved: pass i runs, for every sequence with a draft i, the
   * token before it through the draft model (writing its K/V where the step will write them
   * again) and draws draft i from the logits. The passes chain on the device: pass i reads draft
   * i - 1 where pass i - 1 sampled it (`SequenceChunk.lastTokenSource`), and the host reads the
   * drafts once, after the last pass (as many passes at a time as stay readable). A draw's
   * penalties count the drafts before it in the draft history, row: the sequence's index among
   * those proposing. Only a sequence whose draws read the drafts before them on the host
   * (`StepDraws.draftDrawReadsDrafts`: a grammar) makes the host read each pass before the next. Single-token passes that fit a recorded batch size
   * replay the draft model's decode graphs. The passes sample on the backend, which moves the
   * draws that pending tokens are read from: no scheduled sequence may have one.
   */
  private proposeDrafts(draft: DraftModel, output: SchedulerOutput, draws: StepDraws): void {
    const proposing = output.scheduled.flatMap(({ seq }, s) => (seq.numDraftTokens > 0 && seq.draftTokenId(0) === UNPROPOSED_DRAFT ? [s] : []));
    if (proposing.length === 0) return;
    this.unproposed(output);
    const rotaryRow = draft.model.rotaryRow?.bind(draft.model);
    const readsDrafts = proposing.some((s) => draws.draftDrawReadsDrafts(s));
    const historyRows = new Map(proposing.map((s, i) => [s, i]));
    // Passes the host has not read yet: their drafts are still on the device.
    let unread: { sampled: SampledTokens; active: number[]; index: number }[] = [];
    const readPasses = () => {
      for (const { sampled, active, index } of unread) {
        const { tokenIds } = sampled.read();
        active.forEach((s, row) => {
          if (tokenIds[row] < 0) throw new KeelError('backend', 'the draft model gave no finite logit to draw a draft from');
          output.scheduled[s].seq.setDraftToken(index, tokenIds[row]);
        });
      }
      unread = [];
    };
    // Each sequence's row in the latest pass: where its latest draft was sampled.
    let rows = new Map<number, number>();
    for (let index = 0; ; index++) {
      const active = proposing.filter((s) => output.scheduled[s].seq.numDraftTokens > index);
      if (active.length === 0) break;
      if (readsDrafts || unread.length === READABLE_SAMPLING_PASSES) readPasses();
      const chunks = active.map((s): SequenceChunk => {
        const seq = output.scheduled[s].seq;
        const position = seq.numTokens - seq.numDraftTokens - 1 + index;
        const onDevice = index > 0 && seq.draftTokenId(index - 1) === UNPROPOSED_DRAFT;
        const chunk: SequenceChunk = { tokens: [onDevice ? 0 : seq.tokenIds[position]], startPos: position, blockTables: seq.blockTables };
        if (onDevice) chunk.lastTokenSource = rows.get(s)!;
        if (rotaryRow !== undefined) chunk.rotaryRow = (p) => rotaryRow(p, seq.numPromptTokens);
        return chunk;
      });
      const graphBatch = this.graphs?.sizeFor(active.length) ?? null;
      const step = this.backend.beginStep(graphBatch === null ? describeBatch(chunks, this.blockSize) : this.graphs!.padded(chunks, graphBatch));
      const forward = (): Tensor => draft.model.forward(this.backend, step, draft.cache);
      // The draft model's plain decode steps record the same graphs: a proposal pass is one.
      const logits = graphBatch === null ? forward() : this.backend.replayForward(step, draft, forward);
      const sampled = this.backend.sampleRows(logits, active.map((s, row) => draws.draftDraw(s, index, row, readsDrafts ? -1 : historyRows.get(s)!)));
      unread.push({ sampled, active, index });
      rows = new Map(active.map((s, row) => [s, row]));
    }
    readPasses();
  }

  /** The LoRA slot of each adapter the step's sequences run with (put on the device if not there yet), by adapter id. */
  private assignLoraSlots(output: SchedulerOutput): Map<number, number> | null {
    const adapters = output.scheduled.flatMap(({ seq }) => (seq.lora === null ? [] : [seq.lora]));
    if (adapters.length === 0) return null;
    if (this.lora === null) throw new Error('a sequence runs with a LoRA adapter, but the model runner has no LoRA slots');
    return this.lora.assign(adapters);
  }

  /**
   * The scheduled sequences whose drafts are reserved, not yet proposed. Proposals sample on the
   * backend, which moves the draws that pending tokens are read from: no scheduled sequence may
   * have one then.
   */
  private unproposed(output: SchedulerOutput): Sequence[] {
    const seqs = output.scheduled.flatMap(({ seq }) => (seq.numDraftTokens > 0 && seq.draftTokenId(0) === UNPROPOSED_DRAFT ? [seq] : []));
    const pending = seqs.length > 0 && output.scheduled.find(({ seq }) => seq.hasPendingToken);
    if (pending) throw new Error(`sequence ${pending.seq.id} has a pending token: drafts are proposed only in steps that read every token first`);
    return seqs;
  }

  /**
   * Moves the K/V of a draft tree's accepted path into place before the sequence keeps it
   * (Sequence.keepDraftPath): draft path[k] ran at cache index root + 1 + path[k] and belongs at
   * root + 1 + k, the position it was rotated at. In order: a draft's index in the tree is at least
   * its depth, so no move overwrites a slot a later one reads.
   */
  keepDraftPath(seq: Sequence, path: readonly number[]): void {
    const root = seq.numTokens - seq.numDraftTokens - 1;
    // The sequence's logits rows are its root's, then one per draft.
    if (path.length > 0) this.medusa?.acceptDraft(seq, path[path.length - 1]);
    // Each group's blocks are its own: the same move is made in every group's slots.
    const moves = seq.blockTables.flatMap((table) => {
      const slot = (index: number) => table[Math.floor(index / this.blockSize)] * this.blockSize + (index % this.blockSize);
      return path.flatMap((draft, k) => (draft === k ? [] : [[slot(root + 1 + draft), slot(root + 1 + k)]]));
    });
    if (moves.length === 0) return;
    const src = Int32Array.from(moves, ([from]) => from);
    const dst = Int32Array.from(moves, ([, to]) => to);
    for (const cache of this.caches) this.backend.copySlots(cache, src, dst);
    this.ranks?.copySlots(src, dst);
  }

  /** Where the latest step left a sequence's pending token: only that step's ids are kept. */
  private pendingTokenDraw(seq: Sequence): number {
    const draw = this.sampledDraws.get(seq);
    if (draw === undefined) {
      throw new Error(`sequence ${seq.id}: its pending token is not among the latest step's draws`);
    }
    return draw;
  }

  /**
   * The recorded batch size a step pads to, or null to run it eagerly: decode-only steps, and
   * steps whose every sequence verifies the same number of drafts (chains or trees; not over state
   * layers, whose verification keeps per-token snapshots, nor scoring prompt positions).
   */
  private graphBatchSize(output: SchedulerOutput): number | null {
    if (this.graphs === null || output.scheduled.length === 0) return null;
    const rowTokens = output.scheduled[0].numNewTokens;
    if (!output.scheduled.every((entry) => entry.numNewTokens === rowTokens)) return null;
    if (rowTokens > 1) {
      if (this.graphs.options.scratchStateSlot !== null) return null;
      if (!output.scheduled.every(({ seq, numNewTokens }) => verifiesDrafts(seq, numNewTokens) && !seq.needsPromptLogits)) return null;
    }
    return this.graphs.sizeFor(output.scheduled.length);
  }

  /**
   * The step's batch description. `samplingRows[i]` is the scheduled index of sampled row i, and
   * `logitsRows[i]` its row in the logits; `scoredRows` are the prompt positions scored this step.
   * A graph step (`graphBatch` sequences) is `padded`.
   */
  private describe(
    output: SchedulerOutput,
    graphBatch: number | null,
    model: CausalLM,
    loraSlots: Map<number, number> | null,
    draftSources: Map<Sequence, number[]> | null = null,
  ): { batch: BatchDescription; samplingRows: number[]; logitsRows: number[]; scoredRows: { s: number; position: number; row: number }[] } {
    const logitsIndices: number[] = [];
    const samplingRows: number[] = [];
    const logitsRows: number[] = [];
    const scored: { s: number; position: number; token: number }[] = [];
    const rotaryRow = model.rotaryRow?.bind(model);
    let t = 0;
    const chunks: SequenceChunk[] = output.scheduled.map(({ seq, numNewTokens }, s) => {
      const start = seq.numComputedTokens;
      // A scored prompt position's logits give the logprob of the prompt token after it.
      if (seq.needsPromptLogits) {
        for (let p = start; p < Math.min(start + numNewTokens, seq.numPromptTokens - 1); p++) scored.push({ s, position: p, token: t + p - start });
      }
      t += numNewTokens;
      // Only a sequence whose every known token is now in the cache produces a next token;
      // an intermediate prefill chunk needs no logits. Its drafts are verified by the rows of the
      // tokens before them.
      if (start + numNewTokens === seq.numTokens) {
        const numDrafts = seq.numDraftTokens;
        if (numDrafts >= numNewTokens) throw new Error(`sequence ${seq.id}: its chunk of ${numNewTokens} tokens does not hold its last sampled token and ${numDrafts} drafts`);
        logitsRows.push(logitsIndices.length);
        for (let i = numDrafts; i >= 0; i--) logitsIndices.push(t - 1 - i);
        samplingRows.push(s);
      }
      const chunk: SequenceChunk = { tokens: seq.tokenIds.slice(start, start + numNewTokens), startPos: start, blockTables: seq.blockTables };
      // Its last sampled token and its drafts: sparse attention attends from each as a decode there.
      if (verifiesDrafts(seq, numNewTokens)) chunk.verification = true;
      // Drafts still on the device (DraftsOnDevice): read where the drafting passes left them.
      const sources = draftSources?.get(seq);
      if (sources !== undefined && chunk.verification === true) chunk.tokenSources = [-1, ...sources];
      // The last sampled token is the tree's root, draft i its token i + 1.
      if (seq.hasDraftTree) chunk.treeParents = [-1, ...Array.from({ length: seq.numDraftTokens }, (_, i) => seq.draftParent(i) + 1)];
      if (seq.hasPendingToken && start + numNewTokens === seq.numTokens) chunk.lastTokenSource = this.pendingTokenDraw(seq);
      // The original prompt length, which a preempted sequence keeps while it recomputes.
      if (rotaryRow !== undefined) chunk.rotaryRow = (position) => rotaryRow(position, seq.numPromptTokens);
      if (loraSlots !== null && seq.lora !== null) chunk.loraSlot = loraSlots.get(seq.lora.id);
      if (seq.stateSlot >= 0) chunk.stateSlot = seq.stateSlot;
      return chunk;
    });
    if (graphBatch === null || this.graphs === null) {
      const scoredRows = scored.map(({ s, position, token }) => ({ s, position, row: logitsIndices.push(token) - 1 }));
      return { batch: describeBatch(chunks, this.blockSize, logitsIndices), samplingRows, logitsRows, scoredRows };
    }
    // Every token of a graph step has its logits, in order: sequence s's rows start at s · rowTokens.
    const rowTokens = output.scheduled[0].numNewTokens;
    const scoredRows = scored.map(({ s, position }) => ({ s, position, row: s }));
    if (rowTokens > 1 && scoredRows.length > 0) throw new Error('a verification step recorded as a graph scores no prompt positions');
    return { batch: this.graphs.padded(chunks, graphBatch, rowTokens), samplingRows, logitsRows: samplingRows.map((s) => s * rowTokens), scoredRows };
  }
}

/** Whether a scheduled chunk of `numNewTokens` is the sequence's last sampled token and all its drafts, up to its end: a verification. */
function verifiesDrafts(seq: Sequence, numNewTokens: number): boolean {
  return seq.numDraftTokens > 0 && numNewTokens === seq.numDraftTokens + 1 && seq.numComputedTokens + numNewTokens === seq.numTokens;
}
