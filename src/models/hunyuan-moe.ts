import { invalidModel } from '../errors.ts';
import { GatedMlp } from '../layers/gated-mlp.ts';
import { MoeBlock } from '../layers/moe.ts';
import type { ModelFamily } from './causal-lm.ts';
import { DecoderModel } from './decoder.ts';
import { ConfigFields } from './hf-config.ts';
import { parseHunyuanConfig, type LlamaConfig } from './llama.ts';
import { parseNumExperts } from './moe-fields.ts';

/**
 * Tencent's Hunyuan MoE (`hunyuan_v1_moe`: Hunyuan-A13B): Hunyuan dense's attention (per-head
 * query_layernorm / key_layernorm after RoPE, NTK-alpha RoPE, `attention_bias`) and in every
 * layer a mixture of experts: the top `moe_topk` of a softmax over `mlp.gate.wg`, renormalized,
 * plus `mlp.shared_mlp`, a gated MLP every token runs through. Experts and shared MLP are all
 * `intermediate_size` wide, as transformers builds them (it reads neither moe_intermediate_size
 * nor num_shared_expert).
 */
export interface HunyuanMoeConfig extends LlamaConfig {
  numExperts: number;
  /** Each layer's number of chosen experts (`moe_topk`: one for every layer, or a list). */
  numExpertsPerToken: number[];
}

/** HunYuanMoEV1Config's defaults for the MoE keys a config.json may leave out. */
const DEFAULTS = { numExperts: 1, topK: 1 };

function parseHunyuanMoeConfig(json: Record<string, unknown>, source: string): HunyuanMoeConfig {
  const config = parseHunyuanConfig(json, source);
  const fields = new ConfigFields(json, source);
  if (Array.isArray(fields.raw('num_experts'))) throw invalidModel(`${source}: num_experts as a list per layer is not supported for hunyuan_v1_moe (transformers builds every layer's experts from one number)`);
  const numExperts = parseNumExperts(fields, DEFAULTS.numExperts);
  return { ...config, numExperts, numExpertsPerToken: parseTopK(fields, numExperts, config.numLayers) };
}

/** `moe_topk` (or `num_experts_per_tok`): a number for every layer, or one per layer. */
function parseTopK(fields: ConfigFields, numExperts: number, numLayers: number): number[] {
  const key = fields.raw('moe_topk') == null && fields.raw('num_experts_per_tok') != null ? 'num_experts_per_tok' : 'moe_topk';
  const raw = fields.raw(key);
  const perLayer = Array.isArray(raw) ? raw : new Array<unknown>(numLayers).fill(raw ?? DEFAULTS.topK);
  if (perLayer.length < numLayers || !perLayer.every((k) => Number.isSafeInteger(k) && (k as number) >= 1 && (k as number) <= numExperts)) {
    throw invalidModel(`${fields.source}: ${key} must be an integer from 1 to num_experts (${numExperts}), or a list of one per layer (${numLayers}); got ${JSON.stringify(raw)}`);
  }
  return perLayer.slice(0, numLayers) as number[];
}

/** Layer `index`'s `mlp`: router `gate.wg`, experts `experts.E.*_proj`, the shared `shared_mlp.*_proj`. */
function hunyuanMoe(config: HunyuanMoeConfig, index: number): MoeBlock {
  const p = `model.layers.${index}.mlp`;
  const { hiddenSize, intermediateSize, activation } = config;
  return new MoeBlock({
    hiddenSize,
    intermediateSize,
    numExperts: config.numExperts,
    router: `${p}.gate.wg.weight`,
    routerBias: false,
    routing: { topK: config.numExpertsPerToken[index], scoring: 'softmax', selectionBias: null, groups: null, normalize: true, scale: 1 },
    experts: { layout: 'per-expert', name: (e, projection) => `${p}.experts.${e}.${projection}_proj.weight` },
    activation,
    shared: {
      mlp: new GatedMlp({ gate: `${p}.shared_mlp.gate_proj.weight`, up: `${p}.shared_mlp.up_proj.weight`, down: `${p}.shared_mlp.down_proj.weight` }, hiddenSize, intermediateSize, activation, { sharedExpert: true }),
      gate: null,
    },
  });
}

export const hunyuanMoeFamily: ModelFamily<HunyuanMoeConfig> = {
  name: 'Hunyuan-MoE',
  modelTypes: ['hunyuan_v1_moe'],
  parseConfig: parseHunyuanMoeConfig,
  create: (config, maxPositions, streaming, stage) => new DecoderModel(config, maxPositions, streaming, stage, (i) => hunyuanMoe(config, i)),
};
