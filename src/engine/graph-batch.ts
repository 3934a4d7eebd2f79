import { describeBatch, type BatchDescription, type SequenceChunk } from '../step/batch.ts';

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
  /** A state slot no sequence owns, where padding rows keep their recurrent state (null: no layer keeps one). */
  scratchStateSlot: number | null;
}

/**
 * Steps of one token per sequence (the target's and a draft model's decode steps, their
 * proposal passes, a head's drafting passes) padded to a recorded batch size, so that a backend
 * that records graphs replays one graph per size.
 */
export class GraphBatches {
  readonly options: GraphOptions;
  private readonly blockSize: number;

  constructor(options: GraphOptions, blockSize: number) {
    this.options = options;
    this.blockSize = blockSize;
  }

  /** The recorded batch size a step of `numSeqs` single-token rows pads to, or null to run it eagerly. */
  sizeFor(numSeqs: number): number | null {
    if (numSeqs > this.options.maxBatchSize) return null;
    return GRAPH_BATCH_SIZES.find((size) => size >= numSeqs) ?? null;
  }

  /**
   * A graph step of single-token `chunks`: padded to `size` rows with one-token rows in the
   * scratch block (two entries of it, so that the slot after a padding row's token is the
   * scratch block's too) and the scratch state slot, its block tables widened to a power of two, and logits asked for every
   * row, so that its shape stays put while its sequences grow. Row i's logits are row i.
   */
  padded(chunks: SequenceChunk[], size: number): BatchDescription {
    const widest = Math.max(1, ...chunks.map((c) => c.blockTables[0].length));
    const scratch = this.options.scratchBlock;
    const scratchTables = chunks[0].blockTables.map(() => [scratch, scratch]);
    const stateSlot = this.options.scratchStateSlot ?? undefined;
    const rows = [...chunks];
    while (rows.length < size) rows.push({ tokens: [0], startPos: 0, blockTables: scratchTables, stateSlot });
    return describeBatch(rows, this.blockSize, rows.map((_, i) => i), 2 ** Math.ceil(Math.log2(widest)));
  }
}
