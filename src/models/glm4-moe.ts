import { RotaryEmbedding } from '../layers/rotary.ts';
import type { ModelFamily } from './causal-lm.ts';
import { DecoderLayer, DecoderModel, decoderRope, parseDecoderFields, type DecoderConfig } from './decoder.ts';
import type { FeedForward } from './pre-norm-layer.ts';
import { deepseekMlp, parseDeepseekMoe, type DeepseekMoeConfig, type DeepseekMoeDefaults } from './deepseek-moe.ts';
import { ConfigFields } from './hf-config.ts';
import type { MtpLayers } from './mtp-head.ts';
import { checkMropeSections, type Mrope } from './mrope.ts';

/**
 * Z.ai's GLM-4.5, GLM-4.5-Air, GLM-4.6 and GLM-4.7 (`glm4_moe`): grouped-query attention with
 * q/k/v biases (`attention_bias`; o_proj has none), optional per-head q/k RMSNorm
 * (`use_qk_norm`), RoPE over the leading half of each head (`partial_rotary_factor`, default 0.5,
 * rotate_half pairs), and DeepSeek-V3's mixture of experts after the first dense layers. The
 * checkpoints' multi-token prediction layers (`num_nextn_predict_layers`, stored from layer
 * num_hidden_layers on, each one decoder layer of the family with a MoE block) are the model's
 * only with --speculative-method mtp (MtpHead). GLM-4.5V's language model (`glm4v_moe_text`) is the
 * same decoder without q/k norms or MTP layers, its multimodal RoPE read for text positions
 * (mrope.ts). Upstage's Solar Open (`solar_open`) is the same decoder with Llama's attention (no q/k
 * norms, the whole head rotating: transformers' fails on a partial_rotary_factor) and a MoE block in
 * every layer (SolarOpenConfig reads no intermediate_size or first_k_dense_replace), no MTP layers.
 */
export interface Glm4MoeConfig extends DecoderConfig {
  /** Width of the dense layers' MLP (`intermediate_size`). */
  intermediateSize: number;
  /** Per layer, the MTP layers after the decoder's included: a MoE block (from first_k_dense_replace on) or a dense MLP. */
  sparseLayers: boolean[];
  moe: DeepseekMoeConfig;
  /** The multi-token prediction layers stored after the decoder's (`num_nextn_predict_layers`; transformers 5.18's default 1). */
  numNextnPredictLayers: number;
}

type Glm4MoeModelType = 'glm4_moe' | 'glm4v_moe_text' | 'solar_open';

/** What each model_type's config class reads differently, with its defaults. */
interface Glm4MoeTypeTraits {
  maxPositionEmbeddings: number;
  attentionBias: boolean;
  /** The class reads `use_qk_norm` and `num_nextn_predict_layers` (Glm4vMoeTextConfig has neither: no q/k norms, no MTP layers). */
  qkNormAndMtp: boolean;
  mrope?: Mrope;
  /** Every layer sparse, no dense MLP keys read (Solar Open); else dense before first_k_dense_replace. */
  allSparse?: boolean;
  /**
   * Defaults where the class's differ from Glm4MoeConfig's (DEFAULTS, MOE_DEFAULTS); partialRotaryFactor
   * undefined: the whole head rotates, as Llama's attention needs (transformers fails on a partial one).
   */
  defaults?: { partialRotaryFactor: undefined; ropeTheta: number; headDim: number };
  moeDefaults?: Partial<DeepseekMoeDefaults>;
}

const TRAITS: Record<Glm4MoeModelType, Glm4MoeTypeTraits> = {
  glm4_moe: { maxPositionEmbeddings: 131072, attentionBias: false, qkNormAndMtp: true },
  glm4v_moe_text: { maxPositionEmbeddings: 65536, attentionBias: true, qkNormAndMtp: false, mrope: { layout: 'chunks', defaultSections: [8, 12, 12] } },
  solar_open: {
    maxPositionEmbeddings: 131072,
    attentionBias: false,
    qkNormAndMtp: false,
    allSparse: true,
    defaults: { partialRotaryFactor: undefined, ropeTheta: 1e6, headDim: 128 },
    moeDefaults: { expertWidth: 1280, topK: 8 },
  },
};

/** transformers' Glm4MoeConfig and Glm4vMoeTextConfig defaults, alike, for keys a config.json may leave out. */
const DEFAULTS = { numKvHeads: 8, rmsNormEps: 1e-5, partialRotaryFactor: 0.5, intermediateSize: 10944, firstDense: 1, numNextnPredictLayers: 1 };
const MOE_DEFAULTS: DeepseekMoeDefaults = { numExperts: 128, expertWidth: 1408, sharedExperts: 1, routedScale: 1, groups: 1, topkGroups: 1 };

function parseGlm4MoeConfig(json: Record<string, unknown>, source: string): Glm4MoeConfig {
  const modelType = json.model_type as Glm4MoeModelType;
  const traits = TRAITS[modelType];
  const fields = new ConfigFields(json, source);
  const decoder = parseDecoderFields(fields, { ...DEFAULTS, ...traits.defaults, maxPositionEmbeddings: traits.maxPositionEmbeddings });
  if (traits.mrope !== undefined) checkMropeSections(fields, traits.mrope, decoder.rotaryDim);
  const firstDense = traits.allSparse ? 0 : fields.nonNegativeInt('first_k_dense_replace', DEFAULTS.firstDense);
  const numNextnPredictLayers = traits.qkNormAndMtp ? fields.nonNegativeInt('num_nextn_predict_layers', DEFAULTS.numNextnPredictLayers) : 0;
  const allLayers = decoder.numLayers + numNextnPredictLayers;
  return {
    ...decoder,
    attentionBias: fields.boolean('attention_bias', traits.attentionBias),
    outputBias: false,
    qkNorm: traits.qkNormAndMtp && fields.boolean('use_qk_norm', false),
    slidingWindows: new Array<number | null>(allLayers).fill(null),
    // Solar Open has no dense layer to read a width for.
    intermediateSize: traits.allSparse ? 0 : fields.positiveInt('intermediate_size', DEFAULTS.intermediateSize),
    sparseLayers: Array.from({ length: allLayers }, (_, i) => i >= firstDense),
    moe: parseDeepseekMoe(fields, modelType, { ...MOE_DEFAULTS, ...traits.moeDefaults }),
    numNextnPredictLayers,
  };
}

/** Layer `index`'s `mlp`: DeepSeek's MoE block, or a dense gated MLP. */
function glm4Mlp(config: Glm4MoeConfig, index: number): FeedForward {
  return deepseekMlp(config, `model.layers.${index}.mlp`, config.sparseLayers[index]);
}

/** The MTP layers: each a decoder layer as the model's own (GQA with the config's biases and q/k norms), with the MoE block. */
function glm4MtpLayers(config: Glm4MoeConfig): MtpLayers {
  return {
    count: config.numNextnPredictLayers,
    countKey: 'num_nextn_predict_layers',
    layout: { kind: 'shared-head', prefix: `model.layers.${config.numLayers}` },
    rmsNormEps: config.rmsNormEps,
    block: (maxPositions) => {
      const rotary = new RotaryEmbedding(decoderRope(config), maxPositions);
      return { rotary, block: new DecoderLayer(config, config.numLayers, rotary, null, glm4Mlp(config, config.numLayers), 0) };
    },
  };
}

export const glm4MoeFamily: ModelFamily<Glm4MoeConfig> = {
  name: 'GLM-4-MoE',
  modelTypes: Object.keys(TRAITS),
  parseConfig: parseGlm4MoeConfig,
  create: (config, maxPositions, streaming, stage) => new DecoderModel(config, maxPositions, streaming, stage, (i) => glm4Mlp(config, i)),
  mtp: { modelTypes: ['glm4_moe'], layers: glm4MtpLayers },
};
