import { invalidModel } from '../errors.ts';
import type { ModelFamily } from './causal-lm.ts';
import { DecoderModel, parseDecoderFields, type DecoderConfig } from './decoder.ts';
import { ConfigFields } from './hf-config.ts';
import { parseAttentionBiases } from './llama.ts';
import { parseExpertsPerToken, parseNumExperts } from './moe-fields.ts';
import { qwenMlp } from './qwen-moe.ts';

/**
 * AI2's OLMoE (`olmoe`: OLMoE-1B-7B): Llama's pre-norm layers whose q and k are RMS-normed over the
 * whole projection (every head together, as OLMo 2) before RoPE, and a mixture of experts in every
 * layer routed as Qwen2-MoE's (softmax over all experts, the top k renormalized only with
 * `norm_topk_prob`), without a shared expert, each expert `intermediate_size` wide.
 */
export interface OlmoeConfig extends DecoderConfig {
  /** Each expert's width (`intermediate_size`). */
  intermediateSize: number;
  numExperts: number;
  numExpertsPerToken: number;
  normTopkProb: boolean;
}

/** OlmoeConfig's defaults for keys a config.json may leave out. */
const DEFAULTS = { maxPositionEmbeddings: 4096, rmsNormEps: 1e-5, intermediateSize: 2048, numExperts: 64, numExpertsPerToken: 8 };

function parseOlmoeConfig(json: Record<string, unknown>, source: string): OlmoeConfig {
  const fields = new ConfigFields(json, source);
  const decoder = parseDecoderFields(fields, DEFAULTS);
  // OlmoeAttention sizes q_norm by hidden_size and k_norm by (hidden_size / heads) × KV heads: another head_dim cannot run there.
  if (decoder.headDim * decoder.numHeads !== decoder.hiddenSize) {
    throw invalidModel(`${source}: head_dim ${decoder.headDim} is not hidden_size / num_attention_heads (${decoder.hiddenSize} / ${decoder.numHeads}), which olmoe's q/k norms are sized by`);
  }
  if (fields.raw('clip_qkv') != null) throw invalidModel(`${source}: clip_qkv ${JSON.stringify(fields.raw('clip_qkv'))} is not supported for olmoe (Keel does not clamp q, k and v)`);
  const numExperts = parseNumExperts(fields, DEFAULTS.numExperts);
  return {
    ...decoder,
    ...parseAttentionBiases(fields, 'attention_bias'),
    qkNorm: true,
    qkNormOver: 'projection',
    // OlmoeModel builds a causal mask without a window, whatever sliding_window says.
    slidingWindows: new Array<number | null>(decoder.numLayers).fill(null),
    intermediateSize: fields.positiveInt('intermediate_size', DEFAULTS.intermediateSize),
    numExperts,
    numExpertsPerToken: parseExpertsPerToken(fields, numExperts, DEFAULTS.numExpertsPerToken),
    normTopkProb: fields.boolean('norm_topk_prob', false),
  };
}

export const olmoeFamily: ModelFamily<OlmoeConfig> = {
  name: 'OLMoE',
  modelTypes: ['olmoe'],
  parseConfig: parseOlmoeConfig,
  create: (config, maxPositions, streaming, stage) =>
    new DecoderModel(config, maxPositions, streaming, stage, (i) =>
      qwenMlp({ ...config, moeIntermediateSize: config.intermediateSize, intermediateSize: null, sharedExpertIntermediateSize: null }, `model.layers.${i}.mlp`, true),
    ),
};
