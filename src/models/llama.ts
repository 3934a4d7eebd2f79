import type { Backend, KvCache, StepInputs, Tensor } from '../backend/backend.ts';
import { invalidModel } from '../errors.ts';
import { SelfAttention } from '../layers/attention.ts';
import { LmHead, VocabEmbedding } from '../layers/embedding.ts';
import { GatedMlp } from '../layers/gated-mlp.ts';
import { RmsNorm } from '../layers/norm.ts';
import { loadLayers, parametersOf, type Layer, type ParameterSpec, type WeightSource, type WeightUploader } from '../layers/parameters.ts';
import { RotaryEmbedding, ropeContextLength, type RopeScaling } from '../layers/rotary.ts';
import type { LayerKvSpec } from '../step/kv-cache-layout.ts';
import type { CausalLM, ModelFamily } from './causal-lm.ts';
import { ConfigFields, parseCommonFields, parseHeadDim, parseHeads, parseRope, requireActivation } from './hf-config.ts';
import type { ModelConfig } from './model-config.ts';
import { preNormDecoder, type PreNormDecoderLayer } from './pre-norm-decoder.ts';

/** The Llama family: llama, mistral, qwen2 and qwen3 differ only in biases, q/k norms and windows. */
export interface LlamaConfig extends ModelConfig {
  intermediateSize: number;
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
  /** Each layer's window: it attends to at most this many most recent tokens; null = full. */
  slidingWindows: (number | null)[];
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
  const common = parseCommonFields(fields, modelType);
  const { numHeads, numKvHeads } = parseHeads(fields);
  const maxPositionEmbeddings = fields.positiveInt('max_position_embeddings', DEFAULT_MAX_POSITIONS[modelType]);
  requireActivation(fields, 'hidden_act', 'silu', 'silu');
  // Llama and Qwen3 put `attention_bias` on q, k, v and o; Qwen2 always biases q, k, v only; Mistral never.
  const attentionBiasKey = modelType === 'llama' || modelType === 'qwen3' ? fields.boolean('attention_bias', false) : false;
  if (modelType === 'llama' && fields.boolean('mlp_bias', false)) {
    throw invalidModel(`${source}: mlp_bias=true is not supported (Keel's MLP projections carry no bias)`);
  }
  const rope = parseRope(fields, maxPositionEmbeddings);
  return {
    ...common,
    contextLength: ropeContextLength({ scaling: rope.ropeScaling, maxPositionEmbeddings }),
    intermediateSize: fields.positiveInt('intermediate_size'),
    numHeads,
    numKvHeads,
    headDim: parseHeadDim(fields, common.hiddenSize, numHeads, modelType === 'qwen3' ? QWEN3_DEFAULT_HEAD_DIM : undefined),
    rmsNormEps: fields.positiveNumber('rms_norm_eps', 1e-6),
    ...rope,
    maxPositionEmbeddings,
    attentionBias: modelType === 'qwen2' || attentionBiasKey,
    outputBias: attentionBiasKey,
    qkNorm: modelType === 'qwen3',
    slidingWindows: parseSlidingWindows(fields, modelType, common.numLayers),
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

class LlamaDecoderLayer implements Layer, PreNormDecoderLayer {
  readonly inputNorm: RmsNorm;
  readonly attention: SelfAttention;
  readonly postAttentionNorm: RmsNorm;
  readonly mlp: GatedMlp;

  constructor(config: LlamaConfig, index: number, rotary: RotaryEmbedding) {
    const p = `model.layers.${index}`;
    const { hiddenSize, numHeads, numKvHeads, headDim, rmsNormEps: eps } = config;
    this.inputNorm = new RmsNorm(`${p}.input_layernorm.weight`, hiddenSize, eps);
    this.attention = new SelfAttention({
      layer: index,
      hiddenSize,
      numHeads,
      numKvHeads,
      headDim,
      scale: headDim ** -0.5,
      slidingWindow: config.slidingWindows[index],
      softcap: null,
      sinks: null,
      rotary,
      qkNorm: config.qkNorm
        ? { q: new RmsNorm(`${p}.self_attn.q_norm.weight`, headDim, eps), k: new RmsNorm(`${p}.self_attn.k_norm.weight`, headDim, eps) }
        : null,
      qkv: { q: `${p}.self_attn.q_proj.weight`, k: `${p}.self_attn.k_proj.weight`, v: `${p}.self_attn.v_proj.weight` },
      o: `${p}.self_attn.o_proj.weight`,
      qkvBias: config.attentionBias,
      oBias: config.outputBias,
    });
    this.postAttentionNorm = new RmsNorm(`${p}.post_attention_layernorm.weight`, hiddenSize, eps);
    this.mlp = new GatedMlp(
      { gate: `${p}.mlp.gate_proj.weight`, up: `${p}.mlp.up_proj.weight`, down: `${p}.mlp.down_proj.weight` },
      hiddenSize,
      config.intermediateSize,
      { kind: 'silu' },
    );
  }

  get sublayers(): Layer[] {
    return [this.inputNorm, this.attention, this.postAttentionNorm, this.mlp];
  }

  parameters(): ParameterSpec[] {
    return parametersOf(this.sublayers);
  }

  load(source: WeightSource, uploader: WeightUploader): void {
    loadLayers(this.sublayers, source, uploader);
  }
}

/** The Llama-family decoder: pre-norm layers (preNormDecoder) between the embedding and the LM head. */
export class LlamaModel implements CausalLM {
  readonly config: LlamaConfig;
  private readonly rotary: RotaryEmbedding;
  private readonly embedding: VocabEmbedding;
  private readonly layers: LlamaDecoderLayer[];
  private readonly finalNorm: RmsNorm;
  private readonly lmHead: LmHead;

  constructor(config: LlamaConfig, maxPositions: number) {
    this.config = config;
    const rotary = { rotaryDim: config.headDim, theta: config.ropeTheta, scaling: config.ropeScaling, maxPositionEmbeddings: config.maxPositionEmbeddings };
    this.rotary = new RotaryEmbedding(rotary, maxPositions);
    this.embedding = new VocabEmbedding('model.embed_tokens.weight', config.vocabSize, config.hiddenSize);
    this.layers = Array.from({ length: config.numLayers }, (_, i) => new LlamaDecoderLayer(config, i, this.rotary));
    this.finalNorm = new RmsNorm('model.norm.weight', config.hiddenSize, config.rmsNormEps);
    this.lmHead = new LmHead('lm_head.weight', this.embedding, config.tieWordEmbeddings);
  }

  get kvLayers(): LayerKvSpec[] {
    return this.layers.map((l) => l.attention.kvSpec);
  }

  get attentionMacsPerKey(): number[] {
    return this.layers.map(() => 2 * this.config.numHeads * this.config.headDim);
  }

  private get sublayers(): Layer[] {
    return [this.rotary, this.embedding, ...this.layers, this.finalNorm, this.lmHead];
  }

  parameters(): ParameterSpec[] {
    return parametersOf(this.sublayers);
  }

  load(source: WeightSource, uploader: WeightUploader): void {
    loadLayers(this.sublayers, source, uploader);
  }

  forward(b: Backend, step: StepInputs, cache: KvCache): Tensor {
    return this.lmHead.forward(b, preNormDecoder(b, step, cache, this.embedding.forward(b, step), this.layers, this.finalNorm));
  }
}

export const llamaFamily: ModelFamily<LlamaConfig> = {
  name: 'llama (llama, mistral, qwen2, qwen3)',
  modelTypes: MODEL_TYPES,
  parseConfig: parseLlamaConfig,
  create: (config, maxPositions) => new LlamaModel(config, maxPositions),
};
