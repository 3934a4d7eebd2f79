import type { Activation } from '../backend/backend.ts';
import { invalidModel } from '../errors.ts';
import { MoeBlock } from '../layers/moe.ts';
import { ropeContextLength } from '../layers/rotary.ts';
import type { ModelFamily } from './causal-lm.ts';
import { DecoderModel, parseDecoderFields, type DecoderConfig } from './decoder.ts';
import { ConfigFields, parseRopeParameters, ropeParameterFields, type RopeSettings } from './hf-config.ts';
import { parseExpertsPerToken, parseNumExperts } from './moe-fields.ts';

/**
 * gpt-oss: the pre-norm decoder with biased q/k/v/o projections, a learned sink logit per head,
 * sliding and full layers alternating, YaRN, and a MoE block in every layer (router with a bias,
 * softmax over the top k logits, all experts in one interleaved gate/up tensor with biases, clamped
 * SwiGLU). Runs from bf16 (or f32) weights, or from the Hub's checkpoints with MXFP4 experts
 * (`quant_method: mxfp4`, read by the registry's quantization_config parsing).
 */
export interface GptOssConfig extends DecoderConfig {
  /** Each expert's intermediate width (`intermediate_size`). */
  intermediateSize: number;
  numExperts: number;
  numExpertsPerToken: number;
}

/**
 * transformers' GptOssExperts hard-codes these (config.json's `swiglu_limit` is not read): gate
 * clamped to ≤ 7, up to ±7, out = (up + 1) · gate · σ(1.702 · gate).
 */
const CLAMPED_SWIGLU: Activation = { kind: 'clamped-swiglu', alpha: 1.702, limit: 7 };
/** GptOssConfig's defaults. */
const DEFAULT_MAX_POSITIONS = 131072;
const DEFAULT_HEAD_DIM = 64;
const DEFAULT_SLIDING_WINDOW = 128;
const DEFAULT_ROPE_THETA = 150000;
const DEFAULT_ROPE_PARAMETERS = { rope_type: 'yarn', factor: 32.0, beta_fast: 32.0, beta_slow: 1.0, truncate: false, original_max_position_embeddings: 4096 };

function parseGptOssConfig(json: Record<string, unknown>, source: string): GptOssConfig {
  const fields = new ConfigFields(json, source);
  const decoder = parseDecoderFields(fields, { maxPositionEmbeddings: DEFAULT_MAX_POSITIONS, headDim: DEFAULT_HEAD_DIM, activation: CLAMPED_SWIGLU });
  const rope = parseGptOssRope(fields, decoder.maxPositionEmbeddings);
  const numExperts = parseNumExperts(fields);
  const attentionBias = fields.boolean('attention_bias', true);
  return {
    ...decoder,
    ...rope,
    contextLength: ropeContextLength({ scaling: rope.ropeScaling, maxPositionEmbeddings: decoder.maxPositionEmbeddings }),
    attentionBias,
    outputBias: attentionBias,
    qkNorm: false,
    slidingWindows: parseSlidingWindows(fields, decoder.numLayers),
    attentionSinks: true,
    intermediateSize: fields.positiveInt('intermediate_size'),
    numExperts,
    numExpertsPerToken: parseExpertsPerToken(fields, numExperts),
  };
}

/** RoPE from the config, or GptOssConfig's default: YaRN ×32 over 4096 positions, theta 150000, not truncated. */
function parseGptOssRope(fields: ConfigFields, maxPositionEmbeddings: number): RopeSettings {
  const declared = ropeParameterFields(fields);
  const params = declared.values().length > 0 ? declared : new ConfigFields(DEFAULT_ROPE_PARAMETERS, `${fields.source} (GptOssConfig's default rope_parameters)`);
  return parseRopeParameters(params, fields, maxPositionEmbeddings, DEFAULT_ROPE_THETA);
}

/** `layer_types`, or GptOssConfig's default: even layers slide, odd ones are full. A null `sliding_window` slides none. */
function parseSlidingWindows(fields: ConfigFields, numLayers: number): (number | null)[] {
  const window = fields.optionalPositiveInt('sliding_window', DEFAULT_SLIDING_WINDOW);
  const layerTypes = fields.raw('layer_types');
  if (layerTypes == null) return Array.from({ length: numLayers }, (_, i) => (i % 2 === 0 ? window : null));
  if (!Array.isArray(layerTypes) || layerTypes.length !== numLayers || !layerTypes.every((t) => t === 'sliding_attention' || t === 'full_attention')) {
    throw invalidModel(`${fields.source}: layer_types must list "sliding_attention" or "full_attention" for each of the ${numLayers} layers`);
  }
  return layerTypes.map((t) => (t === 'sliding_attention' ? window : null));
}

/** Layer `index`'s `mlp`: router with a bias, experts fused in `experts.gate_up_proj` / `down_proj` with their biases. */
function gptOssMoe(config: GptOssConfig, index: number): MoeBlock {
  const p = `model.layers.${index}.mlp`;
  return new MoeBlock({
    hiddenSize: config.hiddenSize,
    intermediateSize: config.intermediateSize,
    numExperts: config.numExperts,
    router: `${p}.router.weight`,
    routerBias: true,
    routing: { topK: config.numExpertsPerToken, scoring: 'topk-softmax', selectionBias: null, groups: null, normalize: false, scale: 1 },
    experts: {
      layout: 'fused-interleaved',
      gateUp: `${p}.experts.gate_up_proj`,
      gateUpBias: `${p}.experts.gate_up_proj_bias`,
      down: `${p}.experts.down_proj`,
      downBias: `${p}.experts.down_proj_bias`,
    },
    activation: config.activation,
    shared: null,
  });
}

export const gptOssFamily: ModelFamily<GptOssConfig> = {
  name: 'gpt-oss',
  modelTypes: ['gpt_oss'],
  parseConfig: parseGptOssConfig,
  create: (config, maxPositions, streaming, stage) => new DecoderModel(config, maxPositions, streaming, stage, (i) => gptOssMoe(config, i)),
};
