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
 * proposal passes, a head's drafting passes), and verification steps whose every sequence
 * verifies the same number of drafts, padded to a recorded batch size, so that a backend that
 * records graphs replays one graph per size (and per verification length).
 */
export class GraphBatches {
  readonly options: GraphOptions;
  private readonly blockSize: number;

  constructor(options: GraphOptions, blockSize: number) {
    this.options = options;
    this.blockSize = blockSize;
  }

  /** The recorded batch size a step of `numSeqs` rows pads to, or null to run it eagerly. */
  sizeFor(numSeqs: number): number | null {
    if (numSeqs > this.options.maxBatchSize) return null;
    return GRAPH_BATCH_SIZES.find((size) => size >= numSeqs) ?? null;
  }

  /**
   * A graph step of `chunks`, each of `rowTokens` tokens (1 for decode steps; a verification
   * step's last sampled token and its drafts; a head's catch-up over the tokens a verification
   * kept): padded to `size` rows of as many tokens in the scratch block (entries of it enough that
   * the slot after a padding row's last token is the scratch block's too), verification rows where
   * the chunks verify, with the scratch state slot, its block tables widened to a power of two, and
   * logits asked for every token (row i's are rows i · rowTokens onwards), or with `logits: 'last'`
   * for each row's last (row i's is row i), so that its shape stays put while its sequences grow.
   */
  padded(chunks: SequenceChunk[], size: number, rowTokens = 1, logits: 'every' | 'last' = 'every'): BatchDescription {
    const widest = Math.max(1, ...chunks.map((c) => c.blockTables[0].length));
    const scratch = this.options.scratchBlock;
    const entries = Math.max(2, Math.ceil((rowTokens + 1) / this.blockSize));
    const scratchTables = chunks[0].blockTables.map(() => new Array<number>(entries).fill(scratch));
    const stateSlot = this.options.scratchStateSlot ?? undefined;
    const rows = [...chunks];
    const padding: SequenceChunk = { tokens: new Array<number>(rowTokens).fill(0), startPos: 0, blockTables: scratchTables, stateSlot };
    if (chunks[0].verification === true) padding.verification = true;
    while (rows.length < size) rows.push(padding);
    const logitsIndices = logits === 'every' ? Array.from({ length: size * rowTokens }, (_, i) => i) : Array.from({ length: size }, (_, i) => (i + 1) * rowTokens - 1);
    return describeBatch(rows, this.blockSize, logitsIndices, 2 ** Math.ceil(Math.log2(widest)));
  }
}
