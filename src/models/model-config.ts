import type { WeightDType } from '../tensor/host-tensor.ts';

/**
 * What the engine reads of any model's config.json, whatever its family. Each family extends it
 * with its own architecture fields (models/<family>.ts), parsed from the keys transformers defines
 * for it; transformers 4.x and 5.x spellings never leak past the parsers.
 */
export interface ModelConfig {
  /** config.json's model_type. */
  modelType: string;
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  /** Longest sequence the model supports: max_position_embeddings, stretched by RoPE scaling. */
  contextLength: number;
  tieWordEmbeddings: boolean;
  /** dtype the checkpoint declares (`dtype` in 5.x, `torch_dtype` in 4.x). */
  dtype: WeightDType;
  bosTokenId: number | null;
  eosTokenIds: number[];
}
