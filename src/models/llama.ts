import { invalidModel } from '../errors.ts';
import { GatedMlp } from '../layers/gated-mlp.ts';
import type { ModelFamily } from './causal-lm.ts';
import { DecoderModel, parseDecoderFields, type DecoderConfig } from './decoder.ts';
import type { StreamingWindow } from '../step/kv-cache-layout.ts';
import type { PipelineStage } from './pipeline-stage.ts';
import { ConfigFields } from './hf-config.ts';

/** The Llama family: llama, mistral, qwen2 and qwen3 differ only in biases, q/k norms and windows. */
export interface LlamaConfig extends DecoderConfig {
  intermediateSize: number;
  /** gate/up/down carry biases (Llama's `mlp_bias`). */
  mlpBias: boolean;
}

type LlamaModelType = 'llama' | 'mistral' | 'qwen2' | 'qwen3';
const MODEL_TYPES: readonly LlamaModelType[] = ['llama', 'mistral', 'qwen2', 'qwen3'];
const DEFAULT_MAX_POSITIONS: Record<LlamaModelType, number> = { llama: 2048, mistral: 4096 * 32, qwen2: 32768, qwen3: 32768 };
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
  });
  // Llama and Qwen3 put `attention_bias` on q, k, v and o; Qwen2 always biases q, k, v only; Mistral never.
  const attentionBiasKey = modelType === 'llama' || modelType === 'qwen3' ? fields.boolean('attention_bias', false) : false;
  return {
    ...decoder,
    intermediateSize: fields.positiveInt('intermediate_size'),
    mlpBias: modelType === 'llama' && fields.boolean('mlp_bias', false),
    attentionBias: modelType === 'qwen2' || attentionBiasKey,
    outputBias: attentionBiasKey,
    qkNorm: modelType === 'qwen3',
    slidingWindows: parseSlidingWindows(fields, modelType, decoder.numLayers),
  };
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
