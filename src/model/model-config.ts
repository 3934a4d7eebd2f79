/**
 * The engine's normalized view of a Hugging Face `config.json` for the Llama family
 * (llama, mistral, qwen2, qwen3). Parsing and validation live in `hf-config.ts`; everything
 * downstream reads only this shape, so transformers 4.x and 5.x key spellings never leak past it.
 */
export type RopeScaling =
  | { type: 'default' }
  | { type: 'linear'; factor: number }
  | { type: 'dynamic'; factor: number }
  | {
      type: 'llama3';
      factor: number;
      lowFreqFactor: number;
      highFreqFactor: number;
      originalMaxPositionEmbeddings: number;
    }
  | {
      type: 'yarn';
      factor: number;
      originalMaxPositionEmbeddings: number;
      betaFast: number;
      betaSlow: number;
      /** Multiplies cos/sin; HF's `attention_factor`, derived from `mscale` when absent. */
      attentionFactor: number;
      /** HF's `truncate` (default true): round the correction range to whole dimensions. */
      truncate: boolean;
    };

export type ModelType = 'llama' | 'mistral' | 'qwen2' | 'qwen3';
export const SUPPORTED_MODEL_TYPES: readonly ModelType[] = ['llama', 'mistral', 'qwen2', 'qwen3'];

export type WeightDType = 'f32' | 'f16' | 'bf16';

export interface ModelConfig {
  modelType: ModelType;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  /** Per-head dimension; may differ from hiddenSize / numHeads (config key `head_dim`). */
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling;
  maxPositionEmbeddings: number;
  /** q/k/v projections carry a bias (qwen2, or llama's `attention_bias`). */
  attentionBias: boolean;
  /** o_proj carries a bias (llama's `attention_bias` also covers it). */
  outputBias: boolean;
  /** Per-head RMSNorm on q and k before RoPE (qwen3). */
  qkNorm: boolean;
  /** Attend to at most this many most recent tokens (mistral `sliding_window`); null = full. */
  slidingWindow: number | null;
  tieWordEmbeddings: boolean;
  /** dtype the checkpoint declares (`dtype` in 5.x, `torch_dtype` in 4.x). */
  dtype: WeightDType;
  bosTokenId: number | null;
  eosTokenIds: number[];
}
