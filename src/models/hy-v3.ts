import { invalidModel } from '../errors.ts';
import { GatedMlp } from '../layers/gated-mlp.ts';
import { MoeBlock } from '../layers/moe.ts';
import type { ModelFamily } from './causal-lm.ts';
import { DecoderModel, parseDecoderFields, type DecoderConfig } from './decoder.ts';
import { ConfigFields } from './hf-config.ts';
import { parseAttentionBiases } from './llama.ts';
import { parseExpertsPerToken, parseMlpLayerTypes, parseNumExperts } from './moe-fields.ts';
import type { FeedForward } from './pre-norm-layer.ts';

/**
 * Tencent's Hy3 (`hy_v3`), as transformers 5.18's HYV3ForCausalLM runs it: Apertus's attention
 * (per-head q/k RMSNorms before RoPE, `attention_bias` on q/k/v/o) in Llama's pre-norm layers; a
 * dense gated MLP in the layers `mlp_layer_types` calls dense (by default layer 0 alone), and in the
 * others MiniMax-M2's sigmoid router (experts chosen by score + the block's selection bias, their
 * scores renormalized) times `router_scaling_factor`, Qwen3-MoE's experts, plus
 * `num_shared_experts` shared experts. The Hub's checkpoints name the router `mlp.router.gate`, the
 * selection bias `mlp.expert_bias` and the shared experts `mlp.shared_mlp`, which transformers
 * renames as it loads them.
 */
export interface HyV3Config extends DecoderConfig {
  /** Width of the dense layers' MLP (`intermediate_size`). */
  intermediateSize: number;
  /** Per layer: a MoE block or a dense MLP. */
  sparseLayers: boolean[];
  numExperts: number;
  numExpertsPerToken: number;
  /** Each routed expert's width (`moe_intermediate_size`). */
  expertIntermediateSize: number;
  /** The shared experts as one MLP (`moe_intermediate_size` × `num_shared_experts`). */
  sharedIntermediateSize: number;
  /** The routed experts' weights times this (`router_scaling_factor`). */
  routedScale: number;
}

/** HYV3Config's defaults for keys a config.json may leave out. */
const DEFAULTS = {
  maxPositionEmbeddings: 131072,
  headDim: 128,
  numKvHeads: 8,
  rmsNormEps: 1e-5,
  ropeTheta: 11_158_840,
  intermediateSize: 13312,
  numExperts: 192,
  numExpertsPerToken: 8,
  sharedExperts: 1,
  expertWidth: 1536,
  routedScale: 2.826,
};

function parseHyV3Config(json: Record<string, unknown>, source: string): HyV3Config {
  const fields = new ConfigFields(json, source);
  // The shared experts run inside the backend's moe op, whose MLPs have no biases.
  if (fields.boolean('mlp_bias', false)) throw invalidModel(`${source}: mlp_bias true is not supported for hy_v3 (Keel's MoE layers run their shared experts without biases)`);
  const decoder = parseDecoderFields(fields, DEFAULTS);
  const intermediateSize = fields.positiveInt('intermediate_size', DEFAULTS.intermediateSize);
  const numExperts = parseNumExperts(fields, DEFAULTS.numExperts);
  const expertIntermediateSize = fields.positiveInt('moe_intermediate_size', DEFAULTS.expertWidth);
  return {
    ...decoder,
    ...parseAttentionBiases(fields, 'attention_bias'),
    qkNorm: true,
    slidingWindows: new Array<number | null>(decoder.numLayers).fill(null),
    intermediateSize,
    // HYV3Config has no first_k_dense_replace: its default pattern makes layer 0 alone dense.
    sparseLayers: parseMlpLayerTypes(fields, decoder.numLayers, 1),
    numExperts,
    numExpertsPerToken: parseExpertsPerToken(fields, numExperts, DEFAULTS.numExpertsPerToken),
    expertIntermediateSize,
    // HYV3MLP takes `intermediate_size or config.intermediate_size`: no shared experts (0) leaves one intermediate_size wide.
    sharedIntermediateSize: expertIntermediateSize * fields.nonNegativeInt('num_shared_experts', DEFAULTS.sharedExperts) || intermediateSize,
    routedScale: fields.finiteNumber('router_scaling_factor', DEFAULTS.routedScale),
  };
}

/** The experts and routing keys Hy3's and AFMoE's MoE blocks share. */
export type RouterGateMoeConfig = Pick<HyV3Config, 'hiddenSize' | 'activation' | 'intermediateSize' | 'sparseLayers' | 'numExperts' | 'numExpertsPerToken' | 'expertIntermediateSize' | 'sharedIntermediateSize' | 'routedScale'>;

/**
 * Layer `index`'s `mlp` as Hy3 and AFMoE store it: a dense gated MLP, or the MoE block whose router
 * is `router.gate` (sigmoid scores, top k by score + the block's `expert_bias`, renormalized, ×
 * routedScale) over per-expert experts, plus the shared experts under `shared` (none where 0 wide).
 */
export function routerGateMlp(config: RouterGateMoeConfig, index: number, shared: string): FeedForward {
  const p = `model.layers.${index}.mlp`;
  const { hiddenSize, activation } = config;
  const gatedMlp = (prefix: string, width: number, sharedExpert = false) =>
    new GatedMlp({ gate: `${prefix}.gate_proj.weight`, up: `${prefix}.up_proj.weight`, down: `${prefix}.down_proj.weight` }, hiddenSize, width, activation, { sharedExpert });
  if (!config.sparseLayers[index]) return gatedMlp(p, config.intermediateSize);
  return new MoeBlock({
    hiddenSize,
    intermediateSize: config.expertIntermediateSize,
    numExperts: config.numExperts,
    router: `${p}.router.gate.weight`,
    routerBias: false,
    routing: { topK: config.numExpertsPerToken, scoring: 'sigmoid', selectionBias: `${p}.expert_bias`, groups: null, normalize: true, scale: config.routedScale },
    experts: { layout: 'per-expert', name: (e, projection) => `${p}.experts.${e}.${projection}_proj.weight` },
    activation,
    shared: config.sharedIntermediateSize === 0 ? null : { mlp: gatedMlp(`${p}.${shared}`, config.sharedIntermediateSize, true), gate: null },
  });
}

export const hyV3Family: ModelFamily<HyV3Config> = {
  name: 'Hy3',
  modelTypes: ['hy_v3'],
  parseConfig: parseHyV3Config,
  create: (config, maxPositions, streaming, stage) => new DecoderModel(config, maxPositions, streaming, stage, (i) => routerGateMlp(config, i, 'shared_mlp')),
};
