import type { Backend, StepInputs, Tensor } from '../backend/backend.ts';
import { Linear } from './linear.ts';
import { evenPart, readSlice, shardOf } from './shard.ts';
import { isQuantized } from '../tensor/quantized-weight.ts';
import { storedSize, type StoredSize } from '../tensor/stored-size.ts';
import { loaded, type Layer, type ParameterSpec, type WeightSource, type WeightUploader } from './parameters.ts';

/**
 * The token embedding table [vocab, hidden]; rows are scaled by `scale` as they are gathered
 * (Gemma: √hidden). Vocab-parallel: a device holds an equal part of the rows, looks up the tokens
 * it holds (zero rows for the others), and the all-reduce puts every row together.
 */
export class VocabEmbedding implements Layer {
  readonly name: string;
  readonly vocabSize: number;
  readonly hiddenSize: number;
  readonly scale: number;
  private table: ReturnType<WeightUploader['loadWeight']> | null = null;
  /** The vocabulary id of this device's first row. */
  private firstRow = 0;
  /** The table's size in the format the source gave it (ParameterSpec.stored); null before loading, or for a 16-bit shard. */
  private stored: StoredSize | null = null;

  constructor(name: string, vocabSize: number, hiddenSize: number, scale = 1) {
    this.name = name;
    this.vocabSize = vocabSize;
    this.hiddenSize = hiddenSize;
    this.scale = scale;
  }

  parameters(): ParameterSpec[] {
    return [{ name: this.name, shape: [this.vocabSize, this.hiddenSize], access: { kind: 'rows' }, ...(this.stored && { stored: this.stored }) }];
  }

  /**
   * On one device, the table as the source stores it where Keel gathers that quantized
   * (`readVocabulary`: a GGUF file's blocks, each looked-up row dequantized); a vocab-parallel
   * shard is 16-bit.
   */
  load(source: WeightSource, uploader: WeightUploader): void {
    const shard = shardOf(source);
    if (shard.size === 1 && source.readVocabulary !== undefined) {
      const w = source.readVocabulary(this.name);
      this.table = isQuantized(w) ? uploader.loadQuantizedWeight(w, { table: true }) : uploader.loadWeight(w);
      this.stored = storedSize(w);
      return;
    }
    const rows = evenPart(this.vocabSize, shard, `the vocabulary of ${this.name}`);
    this.firstRow = rows.start;
    this.table = uploader.loadWeight(readSlice(source, this.name, { dim: 0, ...rows }));
  }

  get weight(): Tensor {
    return loaded(this.table, this.name);
  }

  forward(b: Backend, step: StepInputs): Tensor {
    return b.allReduce(b.embedding(this.weight, step, this.scale, this.firstRow));
  }
}

/**
 * The LM head: its own [vocab, hidden] matrix, or the embedding table itself when the checkpoint
 * ties them (then it has no parameters of its own and reads the table unscaled). Either is 16-bit,
 * or quantized where the source stores it so (a GGUF file: `readVocabulary`), then multiplied by
 * the quantized kernels as any linear layer. Vocab-parallel: each device computes the logits of
 * its part of the vocabulary, gathered side by side.
 */
export class LmHead implements Layer {
  private readonly own: Linear | null;
  private readonly tied: VocabEmbedding;

  constructor(name: string, embedding: VocabEmbedding, tied: boolean) {
    this.tied = embedding;
    this.own = tied ? null : new Linear({ parts: [{ name, rows: embedding.vocabSize }], inFeatures: embedding.hiddenSize, bias: false, shard: 'column', vocabulary: true });
  }

  /** Whether it reads the embedding table (which must then be loaded wherever the head runs). */
  get tiedToEmbedding(): boolean {
    return this.own === null;
  }

  parameters(): ParameterSpec[] {
    return this.own?.parameters() ?? [];
  }

  load(source: WeightSource, uploader: WeightUploader): void {
    this.own?.load(source, uploader);
  }

  forward(b: Backend, hidden: Tensor): Tensor {
    return b.allGatherColumns(this.own === null ? b.linear(hidden, this.tied.weight, null) : this.own.forward(b, hidden));
  }
}
