import type { Backend, KvCache, SampledTokens, Tensor } from '../backend/backend.ts';
import type { LlamaModel } from '../model/llama.ts';
import { describeBatch, type BatchDescription, type SequenceChunk } from './batch.ts';
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

/** How the backend samples a row on the device: argmax at temperature 0, else Gumbel-max with `seed`. */
export interface DeviceSampling {
  temperature: number;
  seed: number;
}

/** What one step produced for the sequences that sample a token. */
export interface StepResult {
  /** Index into `output.scheduled` of each sampled row. */
  samplingRows: number[];
  /**
   * Each sampled row's token as the device sampled it (-1 when none of its logits is finite);
   * reading waits for the step. Until then the step runs on while the host goes on.
   */
  deviceTokens: () => Int32Array;
  /** Each sampled row's token's logprob under the raw logits, as the device computed it. */
  deviceLogprobs: () => Float32Array;
  /** Sampled row i's logits ([vocab], a view), when a row needs them on the host. */
  logitsOf: ((row: number) => Float32Array) | null;
}

/**
 * Turns the scheduler's decision into the flattened batch description and runs the model on it.
 * It owns no policy: which tokens run, and where their K/V go, was decided before it is called.
 * Decode steps are padded to a recorded batch size and block-table width and replayed as graphs
 * when the backend records them.
 */
export class ModelRunner {
  private readonly backend: Backend;
  private readonly model: LlamaModel;
  private readonly cache: KvCache;
  private readonly blockSize: number;
  private readonly graphs: GraphOptions | null;
  /** Row of each sequence in the latest step's sampled tokens: where a pending token is read. */
  private sampledRows = new Map<Sequence, number>();

  constructor(backend: Backend, model: LlamaModel, cache: KvCache, blockSize: number, graphs: GraphOptions | null = null) {
    this.backend = backend;
    this.model = model;
    this.cache = cache;
    this.blockSize = blockSize;
    this.graphs = backend.recordsGraphs ? graphs : null;
  }

  /**
   * Runs one step. `sampling(s)` says how the backend samples scheduled sequence `s`'s row, or
   * null when the host's sampler needs its logits; logits come to the host only then. It is asked
   * exactly once for each sequence that samples this step, and for no other.
   */
  execute(output: SchedulerOutput, sampling: (s: number) => DeviceSampling | null): StepResult {
    if (output.blockCopies.src.length > 0) {
      this.backend.copyBlocks(this.cache, output.blockCopies.src, output.blockCopies.dst);
    }
    const graphBatch = this.graphBatchSize(output);
    const { batch, samplingRows, logitsRows } = this.describe(output, graphBatch);
    const step = this.backend.beginStep(batch);
    const forward = (): Tensor => this.model.forward(step, this.cache);
    const logits = graphBatch === null ? forward() : this.backend.replayForward(step, this, forward);
    const rows = logits.shape[0];
    const temperatures = new Float32Array(rows);
    const seeds = new Uint32Array(rows);
    let hostRows = 0;
    samplingRows.forEach((s, i) => {
      const how = sampling(s);
      if (how === null) hostRows++;
      else [temperatures[logitsRows[i]], seeds[logitsRows[i]]] = [how.temperature, how.seed];
    });
    const sampled = this.backend.sampleRows(logits, temperatures, seeds);
    this.sampledRows = new Map(samplingRows.map((s, i) => [output.scheduled[s].seq, logitsRows[i]]));
    const deviceTokens = (): Int32Array => {
      const ids = sampled.read();
      return Int32Array.from(logitsRows, (r) => ids[r]);
    };
    const deviceLogprobs = (): Float32Array => {
      const logprobs = sampled.readLogprobs();
      return Float32Array.from(logitsRows, (r) => logprobs[r]);
    };
    if (hostRows === 0) return { samplingRows, deviceTokens, deviceLogprobs, logitsOf: null };
    const host = this.backend.toHost(logits);
    const vocab = host.length / rows;
    return { samplingRows, deviceTokens, deviceLogprobs, logitsOf: (row) => host.subarray(logitsRows[row] * vocab, (logitsRows[row] + 1) * vocab) };
  }

  /** Where the latest step left a sequence's pending token: only that step's ids are kept. */
  private pendingTokenRow(seq: Sequence): number {
    const row = this.sampledRows.get(seq);
    if (row === undefined) {
      throw new Error(`sequence ${seq.id}: its pending token is not in the latest step's sampled rows`);
    }
    return row;
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
      if (seq.hasPendingToken && start + numNewTokens === seq.numTokens) chunk.lastTokenSource = this.pendingTokenRow(seq);
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
