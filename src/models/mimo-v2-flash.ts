import { invalidModel } from '../errors.ts';
import { projectionNames, SelfAttention } from '../layers/attention.ts';
import type { RotaryEmbedding } from '../layers/rotary.ts';
import type { ModelFamily } from './causal-lm.ts';
import { deepseekMlp, parseDeepseekMoe, type DeepseekMoeConfig } from './deepseek-moe.ts';
import { LayerTypeDecoderModel, parseLayerTypeDecoderFields, type LayerTypeDecoderDefaults, type LayerTypeDecoderFields } from './layer-type-decoder.ts';

/**
 * Xiaomi's MiMo-V2-Flash (`mimo_v2_flash`), as transformers 5.18's MiMoV2FlashForCausalLM: GQA
 * whose q/k heads (`head_dim`, 192) are wider than its value heads (`v_head_dim`, 128), values
 * scaled by `attention_value_scale` before they are cached; sliding-window and full layers
 * (`layer_types`), the sliding ones with twice the KV heads and a learned sink logit per head; a
 * RoPE per layer type over the leading `partial_rotary_factor` of each head; DeepSeek-V3's routed
 * experts without shared ones where `mlp_layer_types` says "sparse", a dense MLP elsewhere.
 */
export interface MimoV2FlashConfig extends LayerTypeDecoderFields {
  /** Value head width (`v_head_dim`), at most headDim. */
  valueDim: number;
  /** Values times this before they are cached (`attention_value_scale`; null: 1). */
  valueScale: number;
  moe: DeepseekMoeConfig;
}

/**
 * MiMoV2FlashConfig's defaults for keys a config.json may leave out. Its RoPE where a config.json
 * gives no rope_parameters: default RoPE of theta 5e6 on the full layers, 1e4 on the sliding ones,
 * over 0.334 of each head (MiMoV2FlashRotaryEmbedding's factor where a default-RoPE entry leaves it
 * out; the scaled types' functions read 1). Full attention at layer 0 and every sixth layer.
 */
const DEFAULTS: LayerTypeDecoderDefaults = {
  maxPositions: 131072, numKvHeads: 4, headDim: 192, rmsNormEps: 1e-5, intermediateSize: 16384, slidingWindow: 128,
  rope: {
    full_attention: { rope_type: 'default', rope_theta: 5_000_000, partial_rotary_factor: 0.334 },
    sliding_attention: { rope_type: 'default', rope_theta: 10_000, partial_rotary_factor: 0.334 },
  },
  partialRotaryDefault: (ropeType) => (ropeType === 'default' ? 0.334 : 1),
  slidingLayers: (numLayers) => Array.from({ length: numLayers }, (_, i) => i !== 0 && (i + 1) % 6 !== 0),
};
const VALUE_DEFAULTS = { valueDim: 128, valueScale: 0.707 };
const MOE_DEFAULTS = { numExperts: 256, expertWidth: 2048, sharedExperts: 0, routedScale: 1, groups: 1, topkGroups: 1, topK: 8 };

function parseMimoV2FlashConfig(json: Record<string, unknown>, source: string): MimoV2FlashConfig {
  const { fields, decoder } = parseLayerTypeDecoderFields(json, source, 'mimo_v2_flash', DEFAULTS);
  const { numHeads, numKvHeads, headDim } = decoder;
  if (decoder.slidingLayers.includes(true) && numHeads % (2 * numKvHeads) !== 0) {
    throw invalidModel(`${source}: num_attention_heads (${numHeads}) must be a multiple of the sliding layers' 2 × num_key_value_heads (${2 * numKvHeads}) key/value heads`);
  }
  const valueDim = fields.positiveInt('v_head_dim', VALUE_DEFAULTS.valueDim);
  if (valueDim > headDim) throw invalidModel(`${source}: v_head_dim (${valueDim}) wider than head_dim (${headDim}) is not supported (Keel pads value heads to the q/k heads' width)`);
  return {
    ...decoder,
    valueDim,
    // An explicit null is MiMoV2FlashAttention's 1; an absent key the class's 0.707.
    valueScale: 'attention_value_scale' in json && json.attention_value_scale === null ? 1 : fields.finiteNumber('attention_value_scale', VALUE_DEFAULTS.valueScale),
    // MiMoV2FlashConfig has no shared experts (it removes n_shared_experts), whatever the key says.
    moe: { ...parseDeepseekMoe(fields, 'mimo_v2_flash', MOE_DEFAULTS), sharedIntermediateSize: 0 },
  };
}

/** Layer `index`'s attention: GQA with narrow values; on a sliding layer twice the KV heads, the window and sinks. */
function mimoAttention(config: MimoV2FlashConfig, index: number, rotary: RotaryEmbedding): SelfAttention {
  const p = `model.layers.${index}.self_attn`;
  const { headDim } = config;
  const sliding = config.slidingLayers[index];
  return new SelfAttention({
    layer: index,
    hiddenSize: config.hiddenSize,
    numHeads: config.numHeads,
    numKvHeads: sliding ? 2 * config.numKvHeads : config.numKvHeads,
    headDim,
    scale: headDim ** -0.5,
    slidingWindow: sliding ? config.slidingWindow : null,
    softcap: null,
    // The Hub's name; transformers' module calls it `sinks`.
    sinks: sliding ? `${p}.attention_sink_bias` : null,
    rotary,
    qkNorm: null,
    ...projectionNames(p),
    qkvBias: config.attentionBias,
    oBias: false,
    // Heads as wide as q/k's and unscaled values need no padding (nor its 16-bit-only read).
    narrowValues: config.valueDim === headDim && config.valueScale === 1 ? null : { valueDim: config.valueDim, scale: config.valueScale },
  });
}

export const mimoV2FlashFamily: ModelFamily<MimoV2FlashConfig> = {
  name: 'MiMo-V2-Flash',
  modelTypes: ['mimo_v2_flash'],
  parseConfig: parseMimoV2FlashConfig,
  create: (config, maxPositions, streaming, stage) =>
    new LayerTypeDecoderModel(config, maxPositions, streaming, stage, {
      attention: (i, rotary) => mimoAttention(config, i, rotary),
      mlp: (i) => deepseekMlp(config, `model.layers.${i}.mlp`, config.sparseLayers[i]),
    }),
};
