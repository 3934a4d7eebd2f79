import { invalidModel } from '../errors.ts';
import { GatedMlp } from '../layers/gated-mlp.ts';
import type { ModelFamily } from './causal-lm.ts';
import { DecoderModel, parseDecoderFields, type DecoderConfig, type DecoderMultipliers } from './decoder.ts';
import type { StreamingWindow } from '../step/kv-cache-layout.ts';
import type { PipelineStage } from './pipeline-stage.ts';
import { ConfigFields, parseRopeLayers, parseSlidingLayerTypes } from './hf-config.ts';

/**
 * The Llama family: llama, mistral, qwen2, qwen3, smollm3 and granite differ only in biases, q/k
 * norms, windows, NoPE layers (SmolLM3's) and multipliers (Granite's).
 */
export interface LlamaConfig extends DecoderConfig {
  intermediateSize: number;
  /** gate/up/down carry biases (Llama's `mlp_bias`). */
  mlpBias: boolean;
}

type LlamaModelType = 'llama' | 'mistral' | 'qwen2' | 'qwen3' | 'smollm3' | 'granite';
const MODEL_TYPES: readonly LlamaModelType[] = ['llama', 'mistral', 'qwen2', 'qwen3', 'smollm3', 'granite'];
const DEFAULT_MAX_POSITIONS: Record<LlamaModelType, number> = { llama: 2048, mistral: 4096 * 32, qwen2: 32768, qwen3: 32768, smollm3: 32768, granite: 2048 };
/** SmolLM3Config's default_theta; the others' is transformers' 1e4. */
const SMOLLM3_ROPE_THETA = 2_000_000;
const DEFAULT_SLIDING_WINDOW = 4096;
const DEFAULT_MAX_WINDOW_LAYERS = 28;
/** Qwen3Config defaults head_dim to 128 rather than hidden_size / num_attention_heads. */
const QWEN3_DEFAULT_HEAD_DIM = 128;

function parseLlamaConfig(json: Record<string, unknown>, source: string): LlamaConfig {
  const fields = new ConfigFields(json, source);
  const modelType = fields.raw('model_type') as LlamaModelType;
  const decoder = parseDecoderFields(fields, {
    maxPositionEmbeddings: DEFAULT_MAX_POSITIONS[modelType],
    headDim: modelType === 'qwen3' ? QWEN3_DEFAULT_HEAD_DIM : undefined,
    ropeTheta: modelType === 'smollm3' ? SMOLLM3_ROPE_THETA : undefined,
  });
  const smollm3 = modelType === 'smollm3';
  const granite = modelType === 'granite';
  // Llama, Qwen3, SmolLM3 and Granite put `attention_bias` on q, k, v and o; Qwen2 always biases q, k, v only; Mistral never.
  const attentionBiasKey = modelType === 'llama' || modelType === 'qwen3' || smollm3 || granite ? fields.boolean('attention_bias', false) : false;
  const ropeLayers = smollm3 ? parseRopeLayers(fields, decoder.numLayers) : decoder.ropeLayers;
  return {
    ...decoder,
    // SmolLM3Config ties the LM head by default.
    tieWordEmbeddings: fields.boolean('tie_word_embeddings', smollm3),
    intermediateSize: fields.positiveInt('intermediate_size'),
    mlpBias: (modelType === 'llama' || smollm3 || granite) && fields.boolean('mlp_bias', false),
    attentionBias: modelType === 'qwen2' || attentionBiasKey,
    outputBias: attentionBiasKey,
    qkNorm: modelType === 'qwen3',
    slidingWindows: smollm3 ? parseSmolLM3Windows(fields, ropeLayers) : parseSlidingWindows(fields, modelType, decoder.numLayers),
    ropeLayers,
    multipliers: granite ? parseGraniteMultipliers(fields) : null,
  };
}

/** GraniteConfig's multipliers, each 1 by default (the attention's too: not head_dim^-0.5). */
function parseGraniteMultipliers(fields: ConfigFields): DecoderMultipliers {
  return {
    embedding: fields.finiteNumber('embedding_multiplier', 1),
    residual: fields.finiteNumber('residual_multiplier', 1),
    attention: fields.finiteNumber('attention_multiplier', 1),
    logits: fields.positiveNumber('logits_scaling', 1),
  };
}

/**
 * SmolLM3's windows, as transformers' masks apply them: a layer slides by `sliding_window` where
 * `layer_types` says "sliding_attention" (whatever `use_sliding_window` says); without layer_types
 * the NoPE layers slide when `use_sliding_window` is true and a window is given.
 */
function parseSmolLM3Windows(fields: ConfigFields, ropeLayers: boolean[]): (number | null)[] {
  const window = fields.optionalPositiveInt('sliding_window', null);
  const useWindow = () => fields.boolean('use_sliding_window', false) && window !== null;
  const sliding = parseSlidingLayerTypes(fields, ropeLayers.length) ?? ropeLayers.map((rotates) => !rotates && useWindow());
  return sliding.map((s) => (s ? window : null));
}

/**
 * Mistral slides every layer. Qwen2/Qwen3 slide only when `use_sliding_window` is true, and then
 * only layers whose `layer_types` entry is "sliding_attention" (derived, when absent, as the layers
 * from `max_window_layers` on).
 */
function parseSlidingWindows(fields: ConfigFields, modelType: LlamaModelType, numLayers: number): (number | null)[] {
  const all = (window: number | null) => new Array<number | null>(numLayers).fill(window);
  if (modelType === 'llama') return all(null);
  if (modelType === 'mistral') return all(fields.optionalPositiveInt('sliding_window', DEFAULT_SLIDING_WINDOW));
  if (!fields.boolean('use_sliding_window', false)) return all(null);
  const window = fields.optionalPositiveInt('sliding_window', DEFAULT_SLIDING_WINDOW);
  if (window === null) return all(null);
  const layerTypes = fields.raw('layer_types');
  if (Array.isArray(layerTypes)) {
    if (layerTypes.length !== numLayers) {
      throw invalidModel(`${fields.source}: layer_types has ${layerTypes.length} entries for ${numLayers} layers`);
    }
    return layerTypes.map((t) => (t === 'sliding_attention' ? window : null));
  }
  const firstSliding = fields.nonNegativeInt('max_window_layers', DEFAULT_MAX_WINDOW_LAYERS);
  return Array.from({ length: numLayers }, (_, i) => (i >= firstSliding ? window : null));
}

/** The Llama-family decoder: a dense gated MLP in every layer. */
export class LlamaModel extends DecoderModel {
  constructor(config: LlamaConfig, maxPositions: number, streaming: StreamingWindow | null, stage: PipelineStage) {
    super(config, maxPositions, streaming, stage, (i) => {
      const p = `model.layers.${i}.mlp`;
      const names = { gate: `${p}.gate_proj.weight`, up: `${p}.up_proj.weight`, down: `${p}.down_proj.weight` };
      return new GatedMlp(names, config.hiddenSize, config.intermediateSize, config.activation, { bias: config.mlpBias });
    });
  }
}

export const llamaFamily: ModelFamily<LlamaConfig> = {
  name: 'Llama',
  modelTypes: MODEL_TYPES,
  parseConfig: parseLlamaConfig,
  create: (config, maxPositions, streaming, stage) => new LlamaModel(config, maxPositions, streaming, stage),
};
