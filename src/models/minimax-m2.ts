import { invalidModel } from '../errors.ts';
import type { MoeOptions } from '../layers/moe.ts';
import type { ModelFamily } from './causal-lm.ts';
import { DecoderModel, parseDecoderFields, type DecoderConfig } from './decoder.ts';
import { ConfigFields, parsePartialRotary } from './hf-config.ts';
import { blockSparseMoe } from './mixtral.ts';
import { parseExpertsPerToken, parseNumExperts } from './moe-fields.ts';

/**
 * MiniMax's MiniMax-M2 (`minimax_m2`): grouped-query attention whose q and k are RMS-normed over
 * the whole projection (every head together, as OLMo 2) before RoPE over the leading
 * `rotary_dim` dims of each head (rotate_half pairs), and a mixture of experts in every layer:
 * Mixtral's experts and checkpoint names under a DeepSeek-V3-style router (sigmoid scores, experts
 * chosen by score + `e_score_correction_bias`, weighted by their renormalized scores), without
 * shared experts or expert groups.
 */
export interface MinimaxM2Config extends DecoderConfig {
  /** Each expert's intermediate width (`intermediate_size`). */
  intermediateSize: number;
  numExperts: number;
  numExpertsPerToken: number;
}

/** transformers' MiniMaxM2Config defaults for keys a config.json may leave out. */
const DEFAULTS = { maxPositionEmbeddings: 196608, headDim: 128, numKvHeads: 8, rmsNormEps: 1e-6, ropeTheta: 5e6, intermediateSize: 1536, numExperts: 256, numExpertsPerToken: 8 };

/**
 * Keys of MiniMax's own modeling code that transformers 5.18 does not read, with the one value its
 * graph matches: a checkpoint asking for another would run differently there and is refused.
 */
const FIXED_KEYS: readonly { key: string; value: unknown }[] = [
  { key: 'use_qk_norm', value: true },
  { key: 'qk_norm_type', value: 'per_layer' },
  { key: 'scoring_func', value: 'sigmoid' },
  { key: 'use_routing_bias', value: true },
  { key: 'shared_intermediate_size', value: 0 },
];

function parseMinimaxM2Config(json: Record<string, unknown>, source: string): MinimaxM2Config {
  const fields = new ConfigFields(json, source);
  for (const { key, value } of FIXED_KEYS) {
    const given = fields.raw(key);
    if (given != null && given !== value) {
      throw invalidModel(`${source}: ${key} ${JSON.stringify(given)} is not supported for minimax_m2 (transformers' MiniMax-M2 runs as ${key} ${JSON.stringify(value)})`);
    }
  }
  const decoder = parseDecoderFields(fields, { ...DEFAULTS, partialRotaryFactor: 1 });
  // Released checkpoints give the rotating dims as `rotary_dim`, which a partial_rotary_factor overrides.
  const rotaryDims = fields.raw('rotary_dim') == null ? decoder.headDim : fields.positiveInt('rotary_dim');
  const numExperts = parseNumExperts(fields, DEFAULTS.numExperts);
  return {
    ...decoder,
    rotaryDim: parsePartialRotary(fields, decoder.headDim, rotaryDims / decoder.headDim),
    attentionBias: false,
    outputBias: false,
    qkNorm: true,
    qkNormOver: 'projection',
    slidingWindows: new Array<number | null>(decoder.numLayers).fill(null),
    intermediateSize: fields.positiveInt('intermediate_size', DEFAULTS.intermediateSize),
    numExperts,
    numExpertsPerToken: parseExpertsPerToken(fields, numExperts, DEFAULTS.numExpertsPerToken),
  };
}

/** DeepSeek-V3's rule in one group: sigmoid scores, top k by score + the layer's `block_sparse_moe.e_score_correction_bias`, weights renormalized. */
function minimaxM2Routing(config: MinimaxM2Config, index: number): MoeOptions['routing'] {
  return { topK: config.numExpertsPerToken, scoring: 'sigmoid', selectionBias: `model.layers.${index}.block_sparse_moe.e_score_correction_bias`, groups: null, normalize: true, scale: 1 };
}

export const minimaxM2Family: ModelFamily<MinimaxM2Config> = {
  name: 'MiniMax-M2',
  modelTypes: ['minimax_m2'],
  parseConfig: parseMinimaxM2Config,
  create: (config, maxPositions, streaming, stage) => new DecoderModel(config, maxPositions, streaming, stage, (i) => blockSparseMoe(config, i, minimaxM2Routing(config, i))),
};
