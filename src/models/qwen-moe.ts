import { invalidModel } from '../errors.ts';
import { GatedMlp } from '../layers/gated-mlp.ts';
import { MoeBlock } from '../layers/moe.ts';
import type { ModelFamily } from './causal-lm.ts';
import { DecoderModel, parseDecoderFields, type DecoderConfig } from './decoder.ts';
import type { FeedForward } from './pre-norm-layer.ts';
import { ConfigFields } from './hf-config.ts';
import { parseExpertsPerToken, parseNumExperts, parseQwenSparseLayers } from './moe-fields.ts';
import { checkMropeSections, type Mrope } from './mrope.ts';

/**
 * Qwen's mixture-of-experts decoders. qwen2_moe (Qwen1.5-MoE, Qwen2-57B-A14B) is Qwen2 with q/k/v
 * biases and a sigmoid-gated shared expert beside the routed ones; qwen3_moe (Qwen3-30B-A3B,
 * 235B-A22B) is Qwen3 with q/k norms and routed experts only. Both route by a softmax over all
 * experts, renormalized only with `norm_topk_prob`, and may keep some layers dense. Qwen3-VL-MoE's
 * language model (qwen3_vl_moe_text) is Qwen3-MoE that always renormalizes, never slides, keeps its
 * experts fused (per expert in quantized checkpoints) and reads multimodal RoPE, which text
 * positions turn into 1-D RoPE (mrope.ts).
 */
export interface QwenMoeConfig extends DecoderConfig {
  /** Width of the dense layers' MLP (`intermediate_size`). */
  intermediateSize: number;
  /** Each routed expert's width (`moe_intermediate_size`). */
  moeIntermediateSize: number;
  numExperts: number;
  numExpertsPerToken: number;
  /** Divide the chosen experts' probabilities by their sum. */
  normTopkProb: boolean;
  /** The qwen2_moe shared expert's width; null for qwen3_moe, which has none. */
  sharedExpertIntermediateSize: number | null;
  /** Per layer: a MoE block (true) or a dense MLP (false). */
  sparseLayers: boolean[];
  /**
   * How the checkpoint holds the routed experts: per expert (`experts.E.gate_proj` / `up_proj` /
   * `down_proj`), or fused as the Hub's Qwen3-VL-MoE checkpoints hold them (`experts.gate_up_proj`
   * [E, hidden, 2n], gate columns first, and `experts.down_proj` [E, n, hidden]). Quantized
   * Qwen3-VL-MoE checkpoints keep theirs per expert.
   */
  expertTensors: 'per-expert' | 'fused';
}

type QwenMoeModelType = 'qwen2_moe' | 'qwen3_moe' | 'qwen3_vl_moe_text';
const DEFAULT_MAX_POSITIONS = 32768;
const DEFAULT_SLIDING_WINDOW = 4096;
const DEFAULT_MAX_WINDOW_LAYERS = 28;

/** Qwen3VLMoeTextConfig's defaults and multimodal RoPE. */
const QWEN3_VL_MOE = {
  maxPositions: 128000,
  ropeTheta: 500_000,
  intermediateSize: 5632,
  moeIntermediateSize: 1408,
  numExperts: 60,
  numExpertsPerToken: 4,
  mrope: { layout: 'interleaved', defaultSections: [24, 20, 20] } satisfies Mrope,
};

/** A routed expert's own tensor (`model.layers.L.mlp.experts.E.gate_proj.weight` and its quantized parts). */
const PER_EXPERT_TENSOR = /^model\.layers\.\d+\.mlp\.experts\.\d+\./;

function parseQwenMoeConfig(json: Record<string, unknown>, source: string, tensorNames: readonly string[] | null = null): QwenMoeConfig {
  const fields = new ConfigFields(json, source);
  const modelType = fields.raw('model_type') as QwenMoeModelType;
  const vl = modelType === 'qwen3_vl_moe_text' ? QWEN3_VL_MOE : null;
  // head_dim defaults to hidden_size / num_attention_heads in all three (not to 128 as in dense Qwen3).
  const decoder = parseDecoderFields(fields, { maxPositionEmbeddings: vl?.maxPositions ?? DEFAULT_MAX_POSITIONS, ropeTheta: vl?.ropeTheta });
  if (vl !== null) checkMropeSections(fields, vl.mrope, decoder.rotaryDim);
  const numExperts = parseNumExperts(fields, vl?.numExperts);
  const qwen2 = modelType === 'qwen2_moe';
  // Qwen2-MoE biases q/k/v (`qkv_bias`, default true), never o; Qwen3-MoE's `attention_bias` covers all four.
  const qwen3Bias = qwen2 ? false : fields.boolean('attention_bias', false);
  return {
    ...decoder,
    attentionBias: qwen2 ? fields.boolean('qkv_bias', true) : qwen3Bias,
    outputBias: qwen3Bias,
    qkNorm: !qwen2,
    slidingWindows: parseSlidingWindows(fields, modelType, decoder.numLayers),
    intermediateSize: fields.positiveInt('intermediate_size', vl?.intermediateSize),
    moeIntermediateSize: fields.positiveInt('moe_intermediate_size', vl?.moeIntermediateSize),
    numExperts,
    numExpertsPerToken: parseExpertsPerToken(fields, numExperts, vl?.numExpertsPerToken),
    // Qwen3-VL-MoE's router always renormalizes its top k, whatever norm_topk_prob says.
    normTopkProb: vl !== null || fields.boolean('norm_topk_prob', false),
    sharedExpertIntermediateSize: qwen2 ? fields.positiveInt('shared_expert_intermediate_size') : null,
    sparseLayers: parseQwenSparseLayers(fields, decoder.numLayers),
    expertTensors: vl !== null && !tensorNames?.some((name) => PER_EXPERT_TENSOR.test(name)) ? 'fused' : 'per-expert',
  };
}

/**
 * Windows apply only with `use_sliding_window`. Qwen3-MoE then slides every layer; Qwen2-MoE the
 * layers `layer_types` names, by default every other layer (0, 2, ...) below `max_window_layers`.
 * Qwen3-VL-MoE never slides (its config class sets sliding_window to None).
 */
function parseSlidingWindows(fields: ConfigFields, modelType: QwenMoeModelType, numLayers: number): (number | null)[] {
  const none = new Array<number | null>(numLayers).fill(null);
  if (modelType === 'qwen3_vl_moe_text' || !fields.boolean('use_sliding_window', false)) return none;
  const window = fields.optionalPositiveInt('sliding_window', DEFAULT_SLIDING_WINDOW);
  if (window === null || modelType === 'qwen3_moe') return none.map(() => window);
  const layerTypes = fields.raw('layer_types');
  if (Array.isArray(layerTypes)) {
    if (layerTypes.length !== numLayers) throw invalidModel(`${fields.source}: layer_types has ${layerTypes.length} entries for ${numLayers} layers`);
    return layerTypes.map((t) => (t === 'sliding_attention' ? window : null));
  }
  const maxWindowLayers = fields.nonNegativeInt('max_window_layers', DEFAULT_MAX_WINDOW_LAYERS);
  return none.map((_, i) => (i % 2 === 0 && i < maxWindowLayers ? window : null));
}

/**
 * What a Qwen feed-forward reads of its model's config (Qwen2-MoE, Qwen3-MoE, and the hybrid
 * Qwen3-Next and Qwen3.5-MoE): `intermediateSize` is null where no layer is dense.
 */
export type QwenFeedForwardConfig = Pick<QwenMoeConfig, 'hiddenSize' | 'activation' | 'moeIntermediateSize' | 'numExperts' | 'numExpertsPerToken' | 'normTopkProb' | 'sharedExpertIntermediateSize'> & {
  intermediateSize: number | null;
  /** How the checkpoint holds the routed experts (QwenMoeConfig.expertTensors); absent: per expert. */
  expertTensors?: QwenMoeConfig['expertTensors'];
};

/**
 * The `mlp` at prefix `p` (`model.layers.N.mlp`): a MoE block (router `gate`, `experts.E.*_proj` or
 * fused `experts.gate_up_proj` / `down_proj`, a `shared_expert` + `shared_expert_gate` where it has
 * one) where `sparse`, else a dense MLP.
 */
export function qwenMlp(config: QwenFeedForwardConfig, p: string, sparse: boolean): FeedForward {
  const { hiddenSize } = config;
  const gatedMlp = (prefix: string, width: number, sharedExpert = false) =>
    new GatedMlp({ gate: `${prefix}.gate_proj.weight`, up: `${prefix}.up_proj.weight`, down: `${prefix}.down_proj.weight` }, hiddenSize, width, config.activation, { sharedExpert });
  if (!sparse) {
    if (config.intermediateSize === null) throw new Error(`${p} is dense, but its config gives no intermediate size`);
    return gatedMlp(p, config.intermediateSize);
  }
  const shared = config.sharedExpertIntermediateSize;
  return new MoeBlock({
    hiddenSize,
    intermediateSize: config.moeIntermediateSize,
    numExperts: config.numExperts,
    router: `${p}.gate.weight`,
    routerBias: false,
    routing: { topK: config.numExpertsPerToken, scoring: 'softmax', selectionBias: null, groups: null, normalize: config.normTopkProb, scale: 1 },
    experts:
      config.expertTensors !== 'fused'
        ? { layout: 'per-expert', name: (e, proj) => `${p}.experts.${e}.${proj}_proj.weight` }
        : { layout: 'fused-halves-either-major', gateUp: `${p}.experts.gate_up_proj`, gateUpBias: null, down: `${p}.experts.down_proj`, downBias: null },
    activation: config.activation,
    shared: shared === null ? null : { mlp: gatedMlp(`${p}.shared_expert`, shared, true), gate: `${p}.shared_expert_gate.weight` },
  });
}

export const qwenMoeFamily: ModelFamily<QwenMoeConfig> = {
  name: 'Qwen-MoE',
  modelTypes: ['qwen2_moe', 'qwen3_moe', 'qwen3_vl_moe_text'],
  parseConfig: parseQwenMoeConfig,
  create: (config, maxPositions, streaming, stage) => new DecoderModel(config, maxPositions, streaming, stage, (i) => qwenMlp(config, `model.layers.${i}.mlp`, config.sparseLayers[i])),
};
