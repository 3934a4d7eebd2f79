import { invalidModel } from '../errors.ts';
import { GatedMlp } from '../layers/gated-mlp.ts';
import type { ModelFamily } from './causal-lm.ts';
import { DecoderModel, parseDecoderFields, type DecoderConfig } from './decoder.ts';
import { deepseekMoeBlock, type DeepseekMoeConfig } from './deepseek-moe.ts';
import { ConfigFields } from './hf-config.ts';
import type { FeedForward } from './pre-norm-layer.ts';

/**
 * Baidu's ERNIE 4.5 MoE (`ernie4_5_moe`: ERNIE-4.5-21B-A3B, 300B-A47B): ERNIE 4.5's attention (GQA,
 * RoPE over interleaved pairs) and, in the layers `moe_layer_start_index` to `moe_layer_end_index`
 * every `moe_layer_interval`, a mixture of experts: softmax scores, the top k chosen by score +
 * `mlp.moe_statics.e_score_correction_bias` and weighted by their renormalized scores, plus
 * shared experts every token runs through; the other layers a dense gated MLP.
 */
export interface ErnieMoeConfig extends DecoderConfig {
  /** Width of the dense layers' MLP (`intermediate_size`). */
  intermediateSize: number;
  /** Per layer, whether its MLP is the MoE block. */
  sparseLayers: boolean[];
  moe: DeepseekMoeConfig;
}

/** transformers' Ernie4_5_MoeConfig defaults for keys a config.json may leave out. */
const DEFAULTS = { maxPositionEmbeddings: 131072, numKvHeads: 4, rmsNormEps: 1e-5, ropeTheta: 500_000, intermediateSize: 12288 };
const MOE_DEFAULTS = { numExperts: 64, topK: 6, expertWidth: 1536, sharedExperts: 2, start: 1, interval: 1, normMin: 1e-12 };
/**
 * transformers divides the chosen weights by max(their sum, moe_norm_min), Keel's routing by their
 * sum + 1e-20: the same for any floor a sum of probabilities never falls to.
 */
const MAX_NORM_MIN = 1e-6;

function parseErnieMoeConfig(json: Record<string, unknown>, source: string): ErnieMoeConfig {
  const fields = new ConfigFields(json, source);
  // Ernie4_5_MoeForCausalLM's lm_head carries a bias under use_bias, which Keel's head does not read.
  if (fields.boolean('use_bias', false)) throw invalidModel(`${source}: use_bias true is not supported for ernie4_5_moe (it adds a bias to lm_head)`);
  const decoder = parseDecoderFields(fields, DEFAULTS);
  const normMin = fields.positiveNumber('moe_norm_min', MOE_DEFAULTS.normMin);
  if (normMin > MAX_NORM_MIN) throw invalidModel(`${source}: moe_norm_min ${normMin} is not supported for ernie4_5_moe (at most ${MAX_NORM_MIN})`);
  return {
    ...decoder,
    tieWordEmbeddings: fields.boolean('tie_word_embeddings', true),
    attentionBias: false,
    outputBias: false,
    qkNorm: false,
    interleavedRope: true,
    slidingWindows: new Array<number | null>(decoder.numLayers).fill(null),
    intermediateSize: fields.positiveInt('intermediate_size', DEFAULTS.intermediateSize),
    sparseLayers: parseErnieSparseLayers(fields, decoder.numLayers),
    moe: parseErnieMoe(fields),
  };
}

/** `moe_num_experts` (or `num_experts`), `moe_k` (or `num_experts_per_tok`): transformers' attribute_map reads either spelling. */
function aliasedPositiveInt(fields: ConfigFields, key: string, alias: string, fallback: number): number {
  const own = fields.raw(key);
  const other = fields.raw(alias);
  if (own != null && other != null && own !== other) throw invalidModel(`${fields.source}: ${key} (${JSON.stringify(own)}) and ${alias} (${JSON.stringify(other)}) disagree`);
  return fields.positiveInt(own == null && other != null ? alias : key, fallback);
}

function parseErnieMoe(fields: ConfigFields): DeepseekMoeConfig {
  const numExperts = aliasedPositiveInt(fields, 'moe_num_experts', 'num_experts', MOE_DEFAULTS.numExperts);
  const topK = aliasedPositiveInt(fields, 'moe_k', 'num_experts_per_tok', MOE_DEFAULTS.topK);
  if (topK > numExperts) throw invalidModel(`${fields.source}: moe_k (${topK}) exceeds the ${numExperts} experts`);
  const expertIntermediateSize = fields.positiveInt('moe_intermediate_size', MOE_DEFAULTS.expertWidth);
  return {
    numExperts,
    numExpertsPerToken: topK,
    expertIntermediateSize,
    sharedIntermediateSize: expertIntermediateSize * fields.nonNegativeInt('moe_num_shared_experts', MOE_DEFAULTS.sharedExperts),
    fusedExperts: false,
    routing: { topK, scoring: 'softmax', selectionBias: true, groups: null, normalize: true, scale: 1 },
  };
}

/** Layer i is sparse iff (i + 1) % moe_layer_interval == 0 and moe_layer_start_index <= i <= moe_layer_end_index (-1: the last layer). */
function parseErnieSparseLayers(fields: ConfigFields, numLayers: number): boolean[] {
  const start = fields.nonNegativeInt('moe_layer_start_index', MOE_DEFAULTS.start);
  const end = fields.raw('moe_layer_end_index') === -1 ? numLayers - 1 : fields.nonNegativeInt('moe_layer_end_index', numLayers - 1);
  const interval = fields.positiveInt('moe_layer_interval', MOE_DEFAULTS.interval);
  return Array.from({ length: numLayers }, (_, i) => (i + 1) % interval === 0 && i >= start && i <= end);
}

/** Layer `index`'s `mlp`: the MoE block with its bias in `moe_statics` ([1, experts]), or a dense gated MLP. */
function ernieMlp(config: ErnieMoeConfig, index: number): FeedForward {
  const p = `model.layers.${index}.mlp`;
  const { moe, hiddenSize, activation } = config;
  if (config.sparseLayers[index]) return deepseekMoeBlock(moe, p, hiddenSize, activation, { name: `${p}.moe_statics.e_score_correction_bias`, shape: [1, moe.numExperts] });
  return new GatedMlp({ gate: `${p}.gate_proj.weight`, up: `${p}.up_proj.weight`, down: `${p}.down_proj.weight` }, hiddenSize, config.intermediateSize, activation);
}

export const ernieMoeFamily: ModelFamily<ErnieMoeConfig> = {
  name: 'ERNIE-4.5-MoE',
  modelTypes: ['ernie4_5_moe'],
  parseConfig: parseErnieMoeConfig,
  create: (config, maxPositions, streaming, stage) => new DecoderModel(config, maxPositions, streaming, stage, (i) => ernieMlp(config, i)),
};
