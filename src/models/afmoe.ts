import { invalidModel } from '../errors.ts';
import type { ModelFamily } from './causal-lm.ts';
import { DecoderModel, LLAMA_NORM_NAMES, parseDecoderFields, type DecoderConfig } from './decoder.ts';
import { ConfigFields, parseSlidingLayerTypes } from './hf-config.ts';
import { routerGateMlp, type RouterGateMoeConfig } from './hy-v3.ts';
import { parseAttentionBiases } from './llama.ts';
import { parseExpertsPerToken, parseNumExperts } from './moe-fields.ts';

/**
 * Arcee's AFMoE (`afmoe`: Trinity), as transformers 5.18's AfmoeForCausalLM runs it: Llama's
 * attention with per-head q/k RMSNorms before RoPE, RoPE on the sliding layers only (the
 * full-attention ones are NoPE), and its output gated by σ(`self_attn.gate_proj`(x)) before o_proj;
 * four norms a layer (input, post_attention on attention's output, pre_mlp, post_mlp on the MLP's
 * output: GLM-4's sandwich); a dense MLP in the first `num_dense_layers` layers, then Hy3's MoE block
 * (sigmoid `router.gate` + `expert_bias`, renormalized, × `route_scale`, `shared_experts`);
 * embeddings × √hidden where `mup_enabled`.
 */
export type AfmoeConfig = DecoderConfig & RouterGateMoeConfig;

/** AfmoeConfig's defaults for keys a config.json may leave out. */
const DEFAULTS = {
  maxPositionEmbeddings: 16384,
  headDim: 128,
  rmsNormEps: 1e-5,
  intermediateSize: 6144,
  expertWidth: 1408,
  denseLayers: 1,
  numExperts: 64,
  numExpertsPerToken: 6,
  sharedExperts: 2,
  routeScale: 1,
  slidingWindow: 1024,
  globalEvery: 4,
};

function parseAfmoeConfig(json: Record<string, unknown>, source: string): AfmoeConfig {
  const fields = new ConfigFields(json, source);
  const decoder = parseDecoderFields(fields, DEFAULTS);
  const { numLayers, hiddenSize, headDim } = decoder;
  const slidingWindows = parseAfmoeWindows(fields, numLayers);
  const numExperts = parseNumExperts(fields, DEFAULTS.numExperts);
  const expertIntermediateSize = fields.positiveInt('moe_intermediate_size', DEFAULTS.expertWidth);
  const denseLayers = fields.nonNegativeInt('num_dense_layers', DEFAULTS.denseLayers);
  return {
    ...decoder,
    ...parseAttentionBiases(fields, 'attention_bias'),
    qkNorm: true,
    slidingWindows,
    ropeLayers: slidingWindows.map((w) => w !== null),
    normNames: { ...LLAMA_NORM_NAMES, attentionOutput: 'post_attention_layernorm', postAttention: 'pre_mlp_layernorm', mlpOutput: 'post_mlp_layernorm' },
    outputGate: true,
    // muP's embedding scale alone (Granite's multipliers, the others left as they are).
    multipliers: fields.boolean('mup_enabled', false) ? { embedding: Math.sqrt(hiddenSize), residual: 1, attention: headDim ** -0.5, logits: 1 } : null,
    intermediateSize: fields.positiveInt('intermediate_size', DEFAULTS.intermediateSize),
    sparseLayers: Array.from({ length: numLayers }, (_, i) => i >= denseLayers),
    numExperts,
    numExpertsPerToken: parseExpertsPerToken(fields, numExperts, DEFAULTS.numExpertsPerToken),
    expertIntermediateSize,
    sharedIntermediateSize: expertIntermediateSize * fields.nonNegativeInt('num_shared_experts', DEFAULTS.sharedExperts),
    routedScale: fields.finiteNumber('route_scale', DEFAULTS.routeScale),
  };
}

/**
 * `layer_types`, by default all but every `global_attn_every_n_layers`-th layer sliding. A null
 * `sliding_window` is refused: transformers builds a sliding-window mask for every model and fails
 * without one.
 */
function parseAfmoeWindows(fields: ConfigFields, numLayers: number): (number | null)[] {
  const window = fields.optionalPositiveInt('sliding_window', DEFAULTS.slidingWindow);
  if (window === null) throw invalidModel(`${fields.source}: sliding_window is null: afmoe needs a window for its sliding layers (transformers fails without one)`);
  const every = fields.positiveInt('global_attn_every_n_layers', DEFAULTS.globalEvery);
  const sliding = parseSlidingLayerTypes(fields, numLayers) ?? Array.from({ length: numLayers }, (_, i) => (i + 1) % every !== 0);
  return sliding.map((s) => (s ? window : null));
}

export const afmoeFamily: ModelFamily<AfmoeConfig> = {
  name: 'AFMoE',
  modelTypes: ['afmoe'],
  parseConfig: parseAfmoeConfig,
  create: (config, maxPositions, streaming, stage) => new DecoderModel(config, maxPositions, streaming, stage, (i) => routerGateMlp(config, i, 'shared_experts')),
};
