import type { Backend, KvCache, Tensor } from '../backend/backend.ts';
import type { CausalLM } from '../models/causal-lm.ts';
import type { Draw, DrawResults } from '../sampling/draw.ts';
import { describeBatch, type BatchDescription, type SequenceChunk } from '../step/batch.ts';
import type { SchedulerOutput } from './scheduler.ts';
import type { Sequence } from './sequence.ts';

/**
 * Decode batch sizes recorded as graphs (vLLM's choice): a decode step of B sequences is padded up
 * to the next of these, so a handful of recorded graphs serve every batch size.
 */
export const GRAPH_BATCH_SIZES: readonly number[] = [1, 2, 4, ...Array.from({ length: 64 }, (_, i) => 8 * (i + 1))];

export interface GraphOptions {
  /** Largest decode batch recorded (the engine's maxNumSeqs); larger ones run eagerly. */
  maxBatchSize: number;
  /** A KV block no sequence owns: padding rows write their keys and values there. */
  scratchBlock: number;
}

/** Where a sampled row's draws read: its logits row, and the previous step's draw holding its pending token. */
export interface DrawSite {
  row: number;
  /** -1 when the sequence has no pending token. */
  pendingDraw: number;
}

/** What one step produced for the sequences that sample a token. */
export interface StepResult {
  /** Index into `output.scheduled` of each sampled row. */
  samplingRows: number[];
  /** Sampled row i's draws are firstDraw[i], firstDraw[i] + 1, ..., in the order they were asked. */
  firstDraw: number[];
  /** The draws' results: reading waits for the step. Until then the step runs on while the host goes on. */
  read: () => DrawResults;
}

/**
 * Turns the scheduler's decision into the flattened batch description and runs the model on it.
 * It owns no policy: which tokens run, and where their K/V go, was decided before it is called.
 * Decode steps are padded to a recorded batch size and block-table width and replayed as graphs
 * when the backend records them.
 */
export class ModelRunner {
  private readonly backend: Backend;
  private readonly model: CausalLM;
  private readonly cache: KvCache;
  private readonly blockSize: number;
  private readonly graphs: GraphOptions | null;
  /** Each sequence's first draw in the latest step's sampling pass: where its pending token is read. */
  private sampledDraws = new Map<Sequence, number>();

  constructor(backend: Backend, model: CausalLM, cache: KvCache, blockSize: number, graphs: GraphOptions | null = null) {
    this.backend = backend;
    this.model = model;
    this.cache = cache;
    this.blockSize = blockSize;
    this.graphs = backend.recordsGraphs ? graphs : null;
  }

  /**
   * Runs one step. `drawsFor(s, site)` gives the draws of scheduled sequence `s`'s row (n of them
   * when a request forks into n completions; none for a row nobody waits for): it is asked exactly
   * once for each sequence that samples this step, and for no other. Logits stay on the device.
   */
  execute(output: SchedulerOutput, drawsFor: (s: number, site: DrawSite) => Draw[]): StepResult {
    if (output.blockCopies.src.length > 0) {
      this.backend.copyBlocks(this.cache, output.blockCopies.src, output.blockCopies.dst);
    }
    const graphBatch = this.graphBatchSize(output);
    const { batch, samplingRows, logitsRows } = this.describe(output, graphBatch);
    const step = this.backend.beginStep(batch);
    const forward = (): Tensor => this.model.forward(this.backend, step, this.cache);
    const logits = graphBatch === null ? forward() : this.backend.replayForward(step, this, forward);
    const draws: Draw[] = [];
    const sampledDraws = new Map<Sequence, number>();
    const firstDraw = samplingRows.map((s, i) => {
      const seq = output.scheduled[s].seq;
      const first = draws.length;
      draws.push(...drawsFor(s, { row: logitsRows[i], pendingDraw: seq.hasPendingToken ? this.pendingTokenDraw(seq) : -1 }));
      if (draws.length > first) sampledDraws.set(seq, first);
      return first;
    });
    const sampled = this.backend.sampleRows(logits, draws);
    this.sampledDraws = sampledDraws;
    return { samplingRows, firstDraw, read: () => sampled.read() };
  }

  /** Where the latest step left a sequence's pending token: only that step's ids are kept. */
  private pendingTokenDraw(seq: Sequence): number {
    const draw = this.sampledDraws.get(seq);
    if (draw === undefined) {
      throw new Error(`sequence ${seq.id}: its pending token is not among the latest step's draws`);
    }
    return draw;
  }

  /** The recorded batch size a decode-only step pads to, or null to run it eagerly. */
  private graphBatchSize(output: SchedulerOutput): number | null {
    if (this.graphs === null || output.scheduled.length > this.graphs.maxBatchSize) return null;
    if (!output.scheduled.every((entry) => entry.numNewTokens === 1)) return null;
    return GRAPH_BATCH_SIZES.find((size) => size >= output.scheduled.length) ?? null;
  }

  /**
   * The step's batch description. `samplingRows[i]` is the scheduled index of sampled row i, and
   * `logitsRows[i]` its row in the logits. A graph step (`graphBatch` sequences) is padded with
   * one-token rows in the scratch block, its block tables widened to a power of two, and asks
   * logits for every row, so that its shape stays put while its sequences grow.
   */
  private describe(output: SchedulerOutput, graphBatch: number | null = null): { batch: BatchDescription; samplingRows: number[]; logitsRows: number[] } {
    const logitsIndices: number[] = [];
    const samplingRows: number[] = [];
    const rotaryRow = this.model.rotaryRow?.bind(this.model);
    let t = 0;
    const chunks: SequenceChunk[] = output.scheduled.map(({ seq, numNewTokens }, s) => {
      const start = seq.numComputedTokens;
      t += numNewTokens;
      // Only a sequence whose every known token is now in the cache produces a next token;
      // an intermediate prefill chunk needs no logits.
      if (start + numNewTokens === seq.numTokens) {
        logitsIndices.push(t - 1);
        samplingRows.push(s);
      }
      const chunk: SequenceChunk = { tokens: seq.tokenIds.slice(start, start + numNewTokens), startPos: start, blockTable: seq.blockTable };
      if (seq.hasPendingToken && start + numNewTokens === seq.numTokens) chunk.lastTokenSource = this.pendingTokenDraw(seq);
      // The original prompt length, which a preempted sequence keeps while it recomputes.
      if (rotaryRow !== undefined) chunk.rotaryRow = (position) => rotaryRow(position, seq.numPromptTokens);
      return chunk;
    });
    if (graphBatch === null || this.graphs === null) {
      return { batch: describeBatch(chunks, this.blockSize, logitsIndices), samplingRows, logitsRows: samplingRows.map((_, i) => i) };
    }
    const widest = Math.max(1, ...chunks.map((c) => c.blockTable.length));
    while (chunks.length < graphBatch) chunks.push({ tokens: [0], startPos: 0, blockTable: [this.graphs.scratchBlock] });
    const allRows = chunks.map((_, i) => i);
    const batch = describeBatch(chunks, this.blockSize, allRows, 2 ** Math.ceil(Math.log2(widest)));
    // Every row of a decode step is its own token, so sampled row i is logits row samplingRows[i].
    return { batch, samplingRows, logitsRows: samplingRows };
  }
}
