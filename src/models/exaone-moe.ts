import { invalidModel } from '../errors.ts';
import type { ModelFamily } from './causal-lm.ts';
import { DecoderModel, parseDecoderFields, type DecoderConfig } from './decoder.ts';
import { deepseekMlp, deepseekMoeBlock, parseDeepseekMoe, type DeepseekMoeConfig, type DeepseekMoeDefaults } from './deepseek-moe.ts';
import { ConfigFields } from './hf-config.ts';
import { parseMlpLayerTypes } from './moe-fields.ts';
import { parseExaone4Layers } from './olmo.ts';

/**
 * LG's K-EXAONE (`exaone_moe`): EXAONE 4's attention (per-head q/k RMSNorms before RoPE, no biases,
 * sliding layers that rotate and full-attention layers without RoPE: olmo.ts's parseExaone4Layers)
 * in Llama's pre-norm layers (OLMoE's, not EXAONE 4's post-norm ones), with DeepSeek-V3's mixture of
 * experts (sigmoid scores, experts chosen by score + `e_score_correction_bias` within the
 * `topk_group` best of `n_group` groups, renormalized, × `routed_scaling_factor`, plus
 * `num_shared_experts` shared experts) in the layers `mlp_layer_types` calls sparse (by default all
 * from `first_k_dense_replace` on); the others have a dense MLP. The checkpoints keep the selection
 * bias beside the router, as `mlp.e_score_correction_bias`.
 */
export interface ExaoneMoeConfig extends DecoderConfig {
  /** Width of the dense layers' MLP (`intermediate_size`). */
  intermediateSize: number;
  /** Per layer: a MoE block or a dense MLP. */
  sparseLayers: boolean[];
  moe: DeepseekMoeConfig;
}

/** ExaoneMoeConfig's defaults for keys a config.json may leave out (num_key_value_heads 32 whatever the query heads). */
const DEFAULTS = { maxPositionEmbeddings: 2048, numKvHeads: 32, rmsNormEps: 1e-5, intermediateSize: 16384, firstDense: 1 };
const MOE_DEFAULTS: DeepseekMoeDefaults = { numExperts: 64, expertWidth: 1024, sharedExperts: 1, routedScale: 2.5, groups: 1, topkGroups: 1, topK: 8, normTopkProb: true };
/** ExaoneMoeConfig's spelling of the expert counts (DeepSeek's n_routed_experts / n_shared_experts). */
const MOE_KEYS = { numExperts: 'num_experts', sharedExperts: 'num_shared_experts' };

function parseExaoneMoeConfig(json: Record<string, unknown>, source: string): ExaoneMoeConfig {
  const fields = new ConfigFields(json, source);
  // ExaoneMoeConfig types sliding_window as an int (EXAONE 4's allows null): transformers refuses a null one.
  if (fields.raw('sliding_window') === null) throw invalidModel(`${source}: sliding_window null is not supported for exaone_moe (ExaoneMoeConfig requires an integer window)`);
  const decoder = parseDecoderFields(fields, DEFAULTS);
  return {
    ...decoder,
    ...parseExaone4Layers(fields, decoder.numLayers),
    // ExaoneMoeConfig has no attention_bias: its projections never carry one.
    attentionBias: false,
    outputBias: false,
    qkNorm: true,
    intermediateSize: fields.positiveInt('intermediate_size', DEFAULTS.intermediateSize),
    sparseLayers: parseMlpLayerTypes(fields, decoder.numLayers, fields.nonNegativeInt('first_k_dense_replace', DEFAULTS.firstDense)),
    moe: parseDeepseekMoe(fields, 'exaone_moe', MOE_DEFAULTS, MOE_KEYS),
  };
}

/** Layer `index`'s `mlp`: the MoE block, its selection bias beside the router, or a dense gated MLP. */
function exaoneMoeMlp(config: ExaoneMoeConfig, index: number) {
  const p = `model.layers.${index}.mlp`;
  if (!config.sparseLayers[index]) return deepseekMlp(config, p, false);
  return deepseekMoeBlock(config.moe, p, config.hiddenSize, config.activation, { name: `${p}.e_score_correction_bias`, shape: [config.moe.numExperts] });
}

export const exaoneMoeFamily: ModelFamily<ExaoneMoeConfig> = {
  name: 'EXAONE-MoE',
  modelTypes: ['exaone_moe'],
  parseConfig: parseExaoneMoeConfig,
  create: (config, maxPositions, streaming, stage) => new DecoderModel(config, maxPositions, streaming, stage, (i) => exaoneMoeMlp(config, i)),
};
