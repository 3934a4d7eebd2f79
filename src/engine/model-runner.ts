import type { Backend, KvCache, Tensor } from '../backend/backend.ts';
import type { LlamaModel } from '../model/llama.ts';
import { describeBatch, type BatchDescription, type SequenceChunk } from './batch.ts';
import type { SchedulerOutput } from './scheduler.ts';

/**
 * Turns the scheduler's decision into the flattened batch description and runs the model on it.
 * It owns no policy: which tokens run, and where their K/V go, was decided before it is called.
 */
export class ModelRunner {
  private readonly backend: Backend;
  private readonly model: LlamaModel;
  private readonly cache: KvCache;
  private readonly blockSize: number;

  constructor(backend: Backend, model: LlamaModel, cache: KvCache, blockSize: number) {
    this.backend = backend;
    this.model = model;
    this.cache = cache;
    this.blockSize = blockSize;
  }

  /**
   * Runs one step. Returns logits [rows, vocab] for the sequences that reach the end of their
   * known tokens in this step (`samplingRows[i]` is the index into `output.scheduled` of row i).
   */
  execute(output: SchedulerOutput): { logits: Float32Array; samplingRows: number[] } {
    if (output.blockCopies.src.length > 0) {
      this.backend.copyBlocks(this.cache, output.blockCopies.src, output.blockCopies.dst);
    }
    const { batch, samplingRows } = this.describe(output);
    const step = this.backend.beginStep(batch);
    const logits: Tensor = this.model.forward(step, this.cache);
    return { logits: this.backend.toHost(logits), samplingRows };
  }

  describe(output: SchedulerOutput): { batch: BatchDescription; samplingRows: number[] } {
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
      return { tokens: seq.tokenIds.slice(start, start + numNewTokens), startPos: start, blockTable: seq.blockTable };
    });
    return { batch: describeBatch(chunks, this.blockSize, logitsIndices), samplingRows };
  }
}
