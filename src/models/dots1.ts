import type { ModelFamily } from './causal-lm.ts';
import { DecoderModel, parseDecoderFields, type DecoderConfig } from './decoder.ts';
import { deepseekMlp, parseDeepseekMoe, type DeepseekMoeConfig, type DeepseekMoeDefaults } from './deepseek-moe.ts';
import { ConfigFields, parseSlidingLayerTypes } from './hf-config.ts';
import { parseAttentionBiases } from './llama.ts';

/**
 * rednote's dots.llm1 (`dots1`): Qwen3's attention (per-head q/k RMSNorms before RoPE, GQA,
 * `attention_bias` on q/k/v/o, windows on the `layer_types` that slide) over DeepSeek-V3's mixture
 * of experts (sigmoid scores, experts chosen by score + `e_score_correction_bias` within the
 * `topk_group` best of `n_group` groups, weighted by their scores, renormalized with
 * `norm_topk_prob`, times `routed_scaling_factor`, plus `n_shared_experts` shared experts) in
 * every layer from `first_k_dense_replace` on; the layers before it have a dense MLP.
 */
export interface Dots1Config extends DecoderConfig {
  /** Width of the dense layers' MLP (`intermediate_size`). */
  intermediateSize: number;
  /** Per layer: a MoE block (from first_k_dense_replace on) or a dense MLP. */
  sparseLayers: boolean[];
  moe: DeepseekMoeConfig;
}

/** Dots1Config's defaults for keys a config.json may leave out. */
const DEFAULTS = { maxPositionEmbeddings: 2048, numKvHeads: 32, intermediateSize: 10944, firstDense: 0, slidingWindow: 4096, maxWindowLayers: 62 };
/** Dots1Config has no default expert counts: n_routed_experts, n_shared_experts and num_experts_per_tok are required. */
const MOE_DEFAULTS: DeepseekMoeDefaults = { numExperts: undefined, expertWidth: 1408, sharedExperts: undefined, routedScale: 1, groups: 1, topkGroups: 1, normTopkProb: false };

function parseDots1Config(json: Record<string, unknown>, source: string): Dots1Config {
  const fields = new ConfigFields(json, source);
  const decoder = parseDecoderFields(fields, DEFAULTS);
  const firstDense = fields.nonNegativeInt('first_k_dense_replace', DEFAULTS.firstDense);
  return {
    ...decoder,
    ...parseAttentionBiases(fields, 'attention_bias'),
    qkNorm: true,
    slidingWindows: parseDots1Windows(fields, decoder.numLayers),
    intermediateSize: fields.positiveInt('intermediate_size', DEFAULTS.intermediateSize),
    sparseLayers: Array.from({ length: decoder.numLayers }, (_, i) => i >= firstDense),
    moe: parseDeepseekMoe(fields, 'dots1', MOE_DEFAULTS),
  };
}

/**
 * The windows of the layers `layer_types` says slide (Dots1Config derives them, when absent, as
 * the layers from `max_window_layers` on, where `sliding_window` is not null); no
 * `use_sliding_window` is read. A null window leaves every layer full.
 */
function parseDots1Windows(fields: ConfigFields, numLayers: number): (number | null)[] {
  const window = fields.optionalPositiveInt('sliding_window', DEFAULTS.slidingWindow);
  const maxWindowLayers = fields.nonNegativeInt('max_window_layers', DEFAULTS.maxWindowLayers);
  const sliding = parseSlidingLayerTypes(fields, numLayers) ?? Array.from({ length: numLayers }, (_, i) => window !== null && i >= maxWindowLayers);
  return sliding.map((s) => (s ? window : null));
}

export const dots1Family: ModelFamily<Dots1Config> = {
  name: 'dots.llm1',
  modelTypes: ['dots1'],
  parseConfig: parseDots1Config,
  create: (config, maxPositions, streaming, stage) => new DecoderModel(config, maxPositions, streaming, stage, (i) => deepseekMlp(config, `model.layers.${i}.mlp`, config.sparseLayers[i])),
};
