import { invalidModel } from '../errors.ts';
import { projectionNames, qkNormLayers, SelfAttention } from '../layers/attention.ts';
import { GatedMlp } from '../layers/gated-mlp.ts';
import { MoeBlock } from '../layers/moe.ts';
import type { RotaryEmbedding } from '../layers/rotary.ts';
import type { ModelFamily } from './causal-lm.ts';
import type { ConfigFields } from './hf-config.ts';
import { LayerTypeDecoderModel, parseLayerTypeDecoderFields, type LayerTypeDecoderDefaults, type LayerTypeDecoderFields } from './layer-type-decoder.ts';
import { parseExpertsPerToken, parseNumExperts } from './moe-fields.ts';
import type { FeedForward } from './pre-norm-layer.ts';

/**
 * Poolside's Laguna (`laguna`), as transformers 5.18's LagunaForCausalLM: GQA with per-head q/k
 * RMSNorms before RoPE, a query head count per layer (`num_attention_heads_per_layer`), the
 * attention output times softplus(g_proj(x)) per head or per element (`gating`), full and
 * sliding-window layers (`layer_types`) each with their RoPE over a leading share of the head;
 * where `mlp_layer_types` says "sparse", a sigmoid router over (optionally soft-capped) logits whose
 * selection bias picks the top k, renormalized, the experts' sum scaled, beside an ungated shared
 * expert; dense MLPs elsewhere.
 */
export interface LagunaConfig extends LayerTypeDecoderFields {
  /** Query heads per layer (`num_attention_heads_per_layer`, else num_attention_heads everywhere). */
  numHeadsPerLayer: number[];
  /** The output gate: one softplus value per head, or per element (`gating`). */
  gatePerHead: boolean;
  numExperts: number;
  numExpertsPerToken: number;
  /** Each routed expert's width (moe_intermediate_size), and the shared expert's (shared_expert_intermediate_size). */
  expertIntermediateSize: number;
  sharedIntermediateSize: number;
  /** Multiplies the routed experts' sum (`moe_routed_scaling_factor`). */
  routedScale: number;
  /** Router logits soft-capped at this (`moe_router_logit_softcapping`; 0 or less: none). */
  routerLogitSoftcap: number | null;
}

/**
 * LagunaConfig's defaults for keys a config.json may leave out. Its RoPE where a config.json gives
 * no rope_parameters: default RoPE of theta 5e5 over half of each head on the full layers, 1e4 over
 * the whole head on the sliding ones (LagunaRotaryEmbedding's factor 1 where an entry leaves it out,
 * for every RoPE type). Every layer full.
 */
const DEFAULTS: LayerTypeDecoderDefaults = {
  maxPositions: 131072, numKvHeads: 8, headDim: 128, rmsNormEps: 1e-6, intermediateSize: 8192, slidingWindow: 512,
  rope: {
    full_attention: { rope_type: 'default', rope_theta: 500_000, partial_rotary_factor: 0.5 },
    sliding_attention: { rope_type: 'default', rope_theta: 10_000, partial_rotary_factor: 1 },
  },
  partialRotaryDefault: () => 1,
  slidingLayers: (numLayers) => new Array<boolean>(numLayers).fill(false),
};
const MOE_DEFAULTS = { numExperts: 256, topK: 8, expertWidth: 512, sharedWidth: 512 };

function parseLagunaConfig(json: Record<string, unknown>, source: string): LagunaConfig {
  const { fields, decoder } = parseLayerTypeDecoderFields(json, source, 'laguna', DEFAULTS);
  if (fields.boolean('moe_apply_router_weight_on_input', false)) {
    throw invalidModel(`${source}: moe_apply_router_weight_on_input true is not supported for laguna (transformers does not implement it either)`);
  }
  const numExperts = parseNumExperts(fields, MOE_DEFAULTS.numExperts);
  const cap = fields.finiteNumber('moe_router_logit_softcapping', 0);
  return {
    ...decoder,
    numHeadsPerLayer: parseHeadsPerLayer(fields, decoder.numLayers, decoder.numHeads, decoder.numKvHeads),
    gatePerHead: parseGating(fields),
    numExperts,
    numExpertsPerToken: parseExpertsPerToken(fields, numExperts, MOE_DEFAULTS.topK),
    expertIntermediateSize: fields.positiveInt('moe_intermediate_size', MOE_DEFAULTS.expertWidth),
    sharedIntermediateSize: fields.positiveInt('shared_expert_intermediate_size', MOE_DEFAULTS.sharedWidth),
    routedScale: fields.finiteNumber('moe_routed_scaling_factor', 1),
    // transformers caps only where the value is positive.
    routerLogitSoftcap: cap > 0 ? cap : null,
  };
}

/** `num_attention_heads_per_layer`, each a multiple of the KV heads it shares them over; else num_attention_heads in every layer. */
function parseHeadsPerLayer(fields: ConfigFields, numLayers: number, numHeads: number, numKvHeads: number): number[] {
  const perLayer = fields.raw('num_attention_heads_per_layer');
  if (perLayer == null) return new Array<number>(numLayers).fill(numHeads);
  if (!(Array.isArray(perLayer) && perLayer.length === numLayers && perLayer.every((n) => Number.isSafeInteger(n) && n > 0 && n % numKvHeads === 0))) {
    throw invalidModel(`${fields.source}: num_attention_heads_per_layer must give each of the ${numLayers} layers a multiple of num_key_value_heads (${numKvHeads}), not ${JSON.stringify(perLayer)}`);
  }
  return perLayer as number[];
}

/** `gating`: true or "per-head" gates each head by one value; false or "per-element" each value by its own (LagunaAttention). */
function parseGating(fields: ConfigFields): boolean {
  const gating = fields.raw('gating') ?? true;
  if (gating === true || gating === 'per-head') return true;
  if (gating === false || gating === 'per-element') return false;
  throw invalidModel(`${fields.source}: gating ${JSON.stringify(gating)} is not one of true, false, "per-head", "per-element"`);
}

/** Layer `index`'s attention: its query heads, per-head q/k norms, the window on a sliding layer, the softplus output gate. */
function lagunaAttention(config: LagunaConfig, index: number, rotary: RotaryEmbedding): SelfAttention {
  const p = `model.layers.${index}.self_attn`;
  const { headDim, numKvHeads } = config;
  const numHeads = config.numHeadsPerLayer[index];
  return new SelfAttention({
    layer: index,
    hiddenSize: config.hiddenSize,
    numHeads,
    numKvHeads,
    headDim,
    scale: headDim ** -0.5,
    slidingWindow: config.slidingLayers[index] ? config.slidingWindow : null,
    softcap: null,
    sinks: null,
    rotary,
    ...qkNormLayers({ q: `${p}.q_norm.weight`, k: `${p}.k_norm.weight` }, 'head', { numHeads, numKvHeads, headDim }, config.rmsNormEps),
    ...projectionNames(p),
    qkvBias: config.attentionBias,
    // Laguna's o_proj follows attention_bias too.
    oBias: config.attentionBias,
    projectedGate: { name: `${p}.g_proj.weight`, perHead: config.gatePerHead, activation: 'softplus' },
  });
}

/**
 * Layer `index`'s `mlp`: the MoE block (router `gate`, its selection bias stored as
 * `experts.e_score_correction_bias`, experts per expert, `shared_expert` always added), or a dense MLP.
 */
function lagunaMlp(config: LagunaConfig, index: number): FeedForward {
  const p = `model.layers.${index}.mlp`;
  const { hiddenSize, activation } = config;
  const projections = (module: string) => ({ gate: `${module}.gate_proj.weight`, up: `${module}.up_proj.weight`, down: `${module}.down_proj.weight` });
  if (!config.sparseLayers[index]) return new GatedMlp(projections(p), hiddenSize, config.intermediateSize, activation);
  return new MoeBlock({
    hiddenSize,
    intermediateSize: config.expertIntermediateSize,
    numExperts: config.numExperts,
    router: `${p}.gate.weight`,
    routerBias: false,
    // The experts' sum times moe_routed_scaling_factor is each weight times it.
    routing: { topK: config.numExpertsPerToken, scoring: 'sigmoid', selectionBias: `${p}.experts.e_score_correction_bias`, groups: null, normalize: true, scale: config.routedScale, logitSoftcap: config.routerLogitSoftcap },
    experts: { layout: 'per-expert', name: (e, projection) => `${p}.experts.${e}.${projection}_proj.weight` },
    activation,
    shared: { mlp: new GatedMlp(projections(`${p}.shared_expert`), hiddenSize, config.sharedIntermediateSize, activation, { sharedExpert: true }), gate: null },
  });
}

export const lagunaFamily: ModelFamily<LagunaConfig> = {
  name: 'Laguna',
  modelTypes: ['laguna'],
  parseConfig: parseLagunaConfig,
  create: (config, maxPositions, streaming, stage) =>
    new LayerTypeDecoderModel(config, maxPositions, streaming, stage, { attention: (i, rotary) => lagunaAttention(config, i, rotary), mlp: (i) => lagunaMlp(config, i) }),
};
