import type { Backend, KvCache, Tensor } from '../backend/backend.ts';
import type { LlamaModel } from '../model/llama.ts';
import type { BatchDescription } from './batch.ts';
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
    const scheduled = output.scheduled;
    const numSeqs = scheduled.length;
    const numTokens = output.numScheduledTokens;
    const tokenIds = new Int32Array(numTokens);
    const positions = new Int32Array(numTokens);
    const slotMapping = new Int32Array(numTokens);
    const queryStartLoc = new Int32Array(numSeqs + 1);
    const seqLens = new Int32Array(numSeqs);
    const maxBlocksPerSeq = Math.max(1, ...scheduled.map(({ seq }) => seq.blockTable.length));
    const blockTables = new Int32Array(numSeqs * maxBlocksPerSeq);
    const logitsIndices: number[] = [];
    const samplingRows: number[] = [];
    let maxQueryLen = 0;
    let maxSeqLen = 0;
    let t = 0;
    scheduled.forEach(({ seq, numNewTokens }, s) => {
      const start = seq.numComputedTokens;
      const end = start + numNewTokens;
      queryStartLoc[s] = t;
      for (let pos = start; pos < end; pos++, t++) {
        tokenIds[t] = seq.tokenIds[pos];
        positions[t] = pos;
        slotMapping[t] = seq.blockTable[Math.floor(pos / this.blockSize)] * this.blockSize + (pos % this.blockSize);
      }
      seqLens[s] = end;
      blockTables.set(seq.blockTable, s * maxBlocksPerSeq);
      maxQueryLen = Math.max(maxQueryLen, numNewTokens);
      maxSeqLen = Math.max(maxSeqLen, end);
      // Only a sequence whose every known token is now in the cache produces a next token;
      // an intermediate prefill chunk needs no logits.
      if (end === seq.numTokens) {
        logitsIndices.push(t - 1);
        samplingRows.push(s);
      }
    });
    queryStartLoc[numSeqs] = t;
    const batch: BatchDescription = {
      numTokens,
      numSeqs,
      tokenIds,
      positions,
      slotMapping,
      queryStartLoc,
      seqLens,
      blockTables,
      maxBlocksPerSeq,
      maxQueryLen,
      maxSeqLen,
      logitsIndices: Int32Array.from(logitsIndices),
    };
    return { batch, samplingRows };
  }
}
