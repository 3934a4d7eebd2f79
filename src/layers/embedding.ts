import type { Backend, StepInputs, Tensor } from '../backend/backend.ts';
import { Linear } from './linear.ts';
import { loaded, type Layer, type ParameterSpec, type WeightSource, type WeightUploader } from './parameters.ts';

/** The token embedding table [vocab, hidden]; rows are scaled by `scale` as they are gathered (Gemma: √hidden). */
export class VocabEmbedding implements Layer {
  readonly name: string;
  readonly vocabSize: number;
  readonly hiddenSize: number;
  private readonly scale: number;
  private table: ReturnType<WeightUploader['loadWeight']> | null = null;

  constructor(name: string, vocabSize: number, hiddenSize: number, scale = 1) {
    this.name = name;
    this.vocabSize = vocabSize;
    this.hiddenSize = hiddenSize;
    this.scale = scale;
  }

  parameters(): ParameterSpec[] {
    return [{ name: this.name, shape: [this.vocabSize, this.hiddenSize], access: { kind: 'rows' } }];
  }

  load(source: WeightSource, uploader: WeightUploader): void {
    this.table = uploader.loadWeight(source.read(this.name));
  }

  get weight(): Tensor {
    return loaded(this.table, this.name);
  }

  forward(b: Backend, step: StepInputs): Tensor {
    return b.embedding(this.weight, step, this.scale);
  }
}

/**
 * The LM head: its own [vocab, hidden] matrix, or the embedding table itself when the checkpoint
 * ties them (then it has no parameters of its own and reads the table unscaled).
 */
export class LmHead implements Layer {
  private readonly own: Linear | null;
  private readonly tied: VocabEmbedding;

  constructor(name: string, embedding: VocabEmbedding, tied: boolean) {
    this.tied = embedding;
    this.own = tied ? null : new Linear({ parts: [{ name, rows: embedding.vocabSize }], inFeatures: embedding.hiddenSize, bias: false, shard: 'column', dense: true });
  }

  parameters(): ParameterSpec[] {
    return this.own?.parameters() ?? [];
  }

  load(source: WeightSource, uploader: WeightUploader): void {
    this.own?.load(source, uploader);
  }

  forward(b: Backend, hidden: Tensor): Tensor {
    return this.own === null ? b.linear(hidden, this.tied.weight, null) : this.own.forward(b, hidden);
  }
}
