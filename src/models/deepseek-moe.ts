import type { Activation, RoutingParams } from '../backend/backend.ts';
import { invalidModel } from '../errors.ts';
import { GatedMlp } from '../layers/gated-mlp.ts';
import { MoeBlock, type ExpertTensors } from '../layers/moe.ts';
import type { ConfigFields } from './hf-config.ts';
import { parseExpertsPerToken } from './moe-fields.ts';

/*
 * DeepSeek's mixture-of-experts block as the DeepSeek (V2, V3, V3.2) and GLM MoE (GLM-4.5 to
 * GLM-5) configs spell it: routed experts chosen per token, shared experts every token runs
 * through, under `model.layers.N.mlp`.
 */

/** The mixture-of-experts layers: routed experts chosen per token, shared experts every token runs through. */
export interface DeepseekMoeConfig {
  numExperts: number;
  numExpertsPerToken: number;
  /** Each routed expert's width (moe_intermediate_size). */
  expertIntermediateSize: number;
  /** The shared experts as one MLP: moe_intermediate_size × n_shared_experts wide; 0 for none. */
  sharedIntermediateSize: number;
  /**
   * The routed experts as two stacks, `experts.gate_up_proj` [E, 2n, hidden] (gate rows, then up)
   * and `experts.down_proj` [E, hidden, n], as transformers' DeepseekV3Experts holds them: Mistral 4,
   * whose checkpoints transformers loads without splitting them per expert. Otherwise per expert.
   */
  fusedExperts: boolean;
  /** The router's rule; `selectionBias` says whether the checkpoint holds V3's e_score_correction_bias. */
  routing: Omit<RoutingParams, 'selectionBias'> & { selectionBias: boolean };
}

/** A config class's defaults for the MoE keys a config.json may leave out; undefined where the class has none (the key is required). */
export interface DeepseekMoeDefaults {
  numExperts: number | undefined;
  expertWidth: number;
  sharedExperts: number | undefined;
  routedScale: number;
  /** n_group and topk_group. */
  groups: number;
  topkGroups: number;
  /** num_experts_per_tok's default (Mistral4Config's 4, Solar Open's and EXAONE MoE's 8); undefined: the key is required. */
  topK?: number;
  /** norm_topk_prob's default for V3-style routing (true where absent: DeepseekV3Config's). */
  normTopkProb?: boolean;
}

/** The keys giving the routed and shared expert counts: DeepSeek's, or a family's own spelling (EXAONE MoE's). */
export interface DeepseekMoeKeys {
  numExperts: string;
  sharedExperts: string;
}

const DEEPSEEK_MOE_KEYS: DeepseekMoeKeys = { numExperts: 'n_routed_experts', sharedExperts: 'n_shared_experts' };

/**
 * The MoE keys. V2 (transformers' DeepseekV2TopkRouter): a softmax over all experts, `greedy` top
 * k or `group_limited_greedy` (only the experts of the `topk_group` groups whose best probability
 * is highest), weights × routed_scaling_factor and never renormalized: transformers 5.17 does not
 * read norm_topk_prob for V2 (DeepSeek's own code would renormalize; the V2 configs set it false).
 * V3 (`noaux_tc`, the only rule transformers implements for it): sigmoid scores, experts chosen by
 * score + e_score_correction_bias within the `topk_group` groups whose two best sum highest,
 * weighted by their scores, renormalized when norm_topk_prob, × routed_scaling_factor. The GLM
 * models route as V3 does (transformers' Glm4MoeTopkRouter, under their own defaults). Mistral 4
 * (Mistral4TopkRouter, which reads neither topk_method nor scoring_func) takes V2's softmax
 * scores and V3's groups (the `topk_group` groups whose two best probabilities sum highest; no
 * selection bias), renormalized when norm_topk_prob, × routed_scaling_factor.
 */
export function parseDeepseekMoe(fields: ConfigFields, modelType: string, defaults: DeepseekMoeDefaults, keys: DeepseekMoeKeys = DEEPSEEK_MOE_KEYS): DeepseekMoeConfig {
  const mistral4 = modelType === 'mistral4';
  const v3 = modelType !== 'deepseek_v2' && !mistral4;
  const numExperts = fields.positiveInt(keys.numExperts, defaults.numExperts);
  const numExpertsPerToken = parseExpertsPerToken(fields, numExperts, defaults.topK);
  const expertIntermediateSize = fields.positiveInt('moe_intermediate_size', defaults.expertWidth);
  const sharedExperts = fields.nonNegativeInt(keys.sharedExperts, defaults.sharedExperts);
  const method = mistral4 ? 'grouped' : fields.string('topk_method', v3 ? 'noaux_tc' : 'greedy');
  const methods = v3 ? ['noaux_tc'] : ['greedy', 'group_limited_greedy'];
  if (!mistral4 && !methods.includes(method)) throw invalidModel(`${fields.source}: topk_method "${method}" is not supported for ${modelType} (supported: ${methods.join(', ')})`);
  const scoring = v3 ? 'sigmoid' : 'softmax';
  const scoringFunc = mistral4 ? scoring : fields.string('scoring_func', scoring);
  if (scoringFunc !== scoring) throw invalidModel(`${fields.source}: scoring_func "${scoringFunc}" is not supported for ${modelType} (it scores experts by ${scoring})`);
  const grouped = method !== 'greedy';
  const classDefaults = v3 || mistral4;
  const numGroups = grouped ? fields.positiveInt('n_group', classDefaults ? defaults.groups : undefined) : 1;
  const topkGroups = grouped ? fields.positiveInt('topk_group', classDefaults ? defaults.topkGroups : undefined) : 1;
  if (numExperts % numGroups !== 0 || topkGroups > numGroups) {
    throw invalidModel(`${fields.source}: ${numExperts} experts in n_group ${numGroups} groups, topk_group ${topkGroups} kept, do not form a group-limited choice`);
  }
  if (numExpertsPerToken > topkGroups * (numExperts / numGroups)) {
    throw invalidModel(`${fields.source}: num_experts_per_tok (${numExpertsPerToken}) exceeds the ${topkGroups * (numExperts / numGroups)} experts of topk_group ${topkGroups} groups`);
  }
  return {
    numExperts,
    numExpertsPerToken,
    expertIntermediateSize,
    sharedIntermediateSize: expertIntermediateSize * sharedExperts,
    fusedExperts: mistral4,
    routing: {
      topK: numExpertsPerToken,
      scoring,
      selectionBias: v3,
      // One group holds every expert: the same choice without the group step.
      groups: numGroups > 1 ? { numGroups, topkGroups, score: classDefaults ? 'top2-sum' : 'max' } : null,
      normalize: classDefaults && fields.boolean('norm_topk_prob', defaults.normTopkProb ?? true),
      scale: fields.finiteNumber('routed_scaling_factor', defaults.routedScale),
    },
  };
}

/** A routed expert's projection names its tensor: DeepSeek's `experts.E.gate_proj` (up_proj, down_proj). */
export type ExpertTensorName = (prefix: string, expert: number, projection: 'gate' | 'up' | 'down') => string;

const deepseekExpertName: ExpertTensorName = (p, e, projection) => `${p}.experts.${e}.${projection}_proj.weight`;

/**
 * A sparse layer's `mlp`: router `gate` (with V3's `gate.e_score_correction_bias`, or the tensor
 * `selectionBias` names where a family stores it elsewhere), the routed experts (`experts.E.*_proj`,
 * the names `expertName` gives, or fused), `shared_experts.*_proj`.
 */
export function deepseekMoeBlock(
  moe: DeepseekMoeConfig,
  p: string,
  hiddenSize: number,
  activation: Activation,
  selectionBias: { name: string; shape: number[] } = { name: `${p}.gate.e_score_correction_bias`, shape: [moe.numExperts] },
  expertName: ExpertTensorName = deepseekExpertName,
): MoeBlock {
  const experts: ExpertTensors = moe.fusedExperts
    ? { layout: 'fused-output-major', gateUp: `${p}.experts.gate_up_proj`, gateUpBias: null, down: `${p}.experts.down_proj`, downBias: null }
    : { layout: 'per-expert', name: (e, projection) => expertName(p, e, projection) };
  const shared = moe.sharedIntermediateSize === 0
    ? null
    : { mlp: new GatedMlp({ gate: `${p}.shared_experts.gate_proj.weight`, up: `${p}.shared_experts.up_proj.weight`, down: `${p}.shared_experts.down_proj.weight` }, hiddenSize, moe.sharedIntermediateSize, activation, { sharedExpert: true }), gate: null };
  return new MoeBlock({
    hiddenSize,
    intermediateSize: moe.expertIntermediateSize,
    numExperts: moe.numExperts,
    router: `${p}.gate.weight`,
    routerBias: false,
    routing: { ...moe.routing, selectionBias: moe.routing.selectionBias ? selectionBias.name : null },
    selectionBiasShape: selectionBias.shape,
    experts,
    activation,
    shared,
  });
}


/**
 * The `mlp` at prefix `p` of a decoder with DeepSeek's MoE layers: the MoE block where `sparse`,
 * else a dense gated MLP (`gate_proj`, `up_proj`, `down_proj`) `intermediateSize` wide.
 */
export function deepseekMlp(config: { hiddenSize: number; intermediateSize: number; activation: Activation; moe: DeepseekMoeConfig | null }, p: string, sparse: boolean): GatedMlp | MoeBlock {
  if (sparse) {
    if (config.moe === null) throw new Error(`${p}: a sparse layer in a model without experts`);
    return deepseekMoeBlock(config.moe, p, config.hiddenSize, config.activation);
  }
  return new GatedMlp({ gate: `${p}.gate_proj.weight`, up: `${p}.up_proj.weight`, down: `${p}.down_proj.weight` }, config.hiddenSize, config.intermediateSize, config.activation);
}
