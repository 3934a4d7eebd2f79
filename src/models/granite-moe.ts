import { GatedMlp } from '../layers/gated-mlp.ts';
import { MoeBlock } from '../layers/moe.ts';
import type { ModelFamily } from './causal-lm.ts';
import { DecoderModel, parseDecoderFields, type DecoderConfig } from './decoder.ts';
import { ConfigFields } from './hf-config.ts';
import { parseAttentionBiases, parseGraniteMultipliers } from './llama.ts';
import { parseExpertsPerToken, parseNumExperts } from './moe-fields.ts';

/**
 * IBM's Granite MoE (`granitemoe`: Granite 3.0 1B-A400M / 3B-A800M, PowerMoE) and Granite MoE with a
 * shared MLP (`granitemoeshared`): Granite's Llama layers and multipliers (embedding, attention
 * scale, residual, logits: DecoderConfig.multipliers) with a mixture of experts in every layer,
 * `block_sparse_moe`: router `router.layer`, the top k of a softmax over its logits renormalized
 * (transformers takes the softmax of the k best logits: the same weights), experts fused
 * output-major as `input_linear` [E, 2n, hidden] (gate rows, then up) and `output_linear`
 * [E, hidden, n]. granitemoeshared adds `shared_mlp` (input_linear [2s, hidden], output_linear
 * [hidden, s]) every token runs through, summed with the experts before the residual multiplier.
 */
export interface GraniteMoeConfig extends DecoderConfig {
  /** Each expert's width (`intermediate_size`). */
  intermediateSize: number;
  numExperts: number;
  numExpertsPerToken: number;
  /** The shared MLP's width (`shared_intermediate_size`, granitemoeshared); 0 for none. */
  sharedIntermediateSize: number;
}

/** GraniteMoeConfig's (and GraniteMoeSharedConfig's) defaults for keys a config.json may leave out. */
const DEFAULTS = { maxPositionEmbeddings: 2048, intermediateSize: 11008, numExperts: 8, numExpertsPerToken: 2 };

function parseGraniteMoeConfig(json: Record<string, unknown>, source: string): GraniteMoeConfig {
  const fields = new ConfigFields(json, source);
  const decoder = parseDecoderFields(fields, DEFAULTS);
  const numExperts = parseNumExperts(fields, DEFAULTS.numExperts);
  return {
    ...decoder,
    ...parseAttentionBiases(fields, 'attention_bias'),
    qkNorm: false,
    slidingWindows: new Array<number | null>(decoder.numLayers).fill(null),
    multipliers: parseGraniteMultipliers(fields),
    intermediateSize: fields.positiveInt('intermediate_size', DEFAULTS.intermediateSize),
    numExperts,
    numExpertsPerToken: parseExpertsPerToken(fields, numExperts, DEFAULTS.numExpertsPerToken),
    // GraniteMoeConfig has no shared MLP, whatever the key says.
    sharedIntermediateSize: decoder.modelType === 'granitemoeshared' ? fields.nonNegativeInt('shared_intermediate_size', 0) : 0,
  };
}

/** What Granite's MoE block reads of a config: GraniteMoE's, or Granite 4.0's hybrid one (granite-hybrid.ts). */
export type GraniteMoeBlockConfig = Pick<GraniteMoeConfig, 'hiddenSize' | 'activation' | 'intermediateSize' | 'numExperts' | 'numExpertsPerToken' | 'sharedIntermediateSize'>;

/** Layer `index`'s `block_sparse_moe`, with granitemoeshared's `shared_mlp` where the config gives it a width. */
export function graniteMoe(config: GraniteMoeBlockConfig, index: number): MoeBlock {
  const p = `model.layers.${index}`;
  const { hiddenSize, activation } = config;
  const fused = (prefix: string) => ({ gateUp: `${prefix}.input_linear.weight`, down: `${prefix}.output_linear.weight` });
  const experts = fused(`${p}.block_sparse_moe`);
  return new MoeBlock({
    hiddenSize,
    intermediateSize: config.intermediateSize,
    numExperts: config.numExperts,
    router: `${p}.block_sparse_moe.router.layer.weight`,
    routerBias: false,
    routing: { topK: config.numExpertsPerToken, scoring: 'softmax', selectionBias: null, groups: null, normalize: true, scale: 1 },
    experts: { layout: 'fused-output-major', ...experts, gateUpBias: null, downBias: null },
    activation,
    shared: config.sharedIntermediateSize === 0
      ? null
      : { mlp: new GatedMlp(fused(`${p}.shared_mlp`), hiddenSize, config.sharedIntermediateSize, activation, { sharedExpert: true }), gate: null },
  });
}

export const graniteMoeFamily: ModelFamily<GraniteMoeConfig> = {
  name: 'GraniteMoE',
  modelTypes: ['granitemoe', 'granitemoeshared'],
  parseConfig: parseGraniteMoeConfig,
  create: (config, maxPositions, streaming, stage) => new DecoderModel(config, maxPositions, streaming, stage, (i) => graniteMoe(config, i)),
};
