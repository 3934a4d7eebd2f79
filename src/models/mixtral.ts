import { MoeBlock, type MoeOptions } from '../layers/moe.ts';
import type { ModelFamily } from './causal-lm.ts';
import { DecoderModel, parseDecoderFields, type DecoderConfig } from './decoder.ts';
import { ConfigFields } from './hf-config.ts';
import { parseExpertsPerToken, parseNumExperts } from './moe-fields.ts';

/** Mixtral: Mistral's decoder with a sparse MoE block (softmax top-k, renormalized) in every layer. */
export interface MixtralConfig extends DecoderConfig {
  /** Each expert's intermediate width (`intermediate_size`). */
  intermediateSize: number;
  numExperts: number;
  numExpertsPerToken: number;
}

/** MixtralConfig's default, as Mistral's. */
const DEFAULT_MAX_POSITIONS = 4096 * 32;

function parseMixtralConfig(json: Record<string, unknown>, source: string): MixtralConfig {
  const fields = new ConfigFields(json, source);
  const decoder = parseDecoderFields(fields, { maxPositionEmbeddings: DEFAULT_MAX_POSITIONS });
  const numExperts = parseNumExperts(fields);
  return {
    ...decoder,
    attentionBias: false,
    outputBias: false,
    qkNorm: false,
    // Unlike MistralConfig, MixtralConfig has no window unless the config names one; it covers every layer.
    slidingWindows: new Array<number | null>(decoder.numLayers).fill(fields.optionalPositiveInt('sliding_window', null)),
    intermediateSize: fields.positiveInt('intermediate_size'),
    numExperts,
    numExpertsPerToken: parseExpertsPerToken(fields, numExperts),
  };
}

/** Layer `index`'s `block_sparse_moe` routed by `routing`: router `gate`, experts `experts.E.w1` (gate), `w3` (up), `w2` (down). */
export function blockSparseMoe(config: Pick<MixtralConfig, 'hiddenSize' | 'intermediateSize' | 'numExperts' | 'activation'>, index: number, routing: MoeOptions['routing']): MoeBlock {
  const p = `model.layers.${index}.block_sparse_moe`;
  const projection = { gate: 'w1', up: 'w3', down: 'w2' } as const;
  return new MoeBlock({
    hiddenSize: config.hiddenSize,
    intermediateSize: config.intermediateSize,
    numExperts: config.numExperts,
    router: `${p}.gate.weight`,
    routerBias: false,
    routing,
    experts: { layout: 'per-expert', name: (e, proj) => `${p}.experts.${e}.${projection[proj]}.weight` },
    activation: config.activation,
    shared: null,
  });
}

/** Mixtral's router: a softmax over all experts, the top k renormalized. */
function mixtralMoe(config: MixtralConfig, index: number): MoeBlock {
  return blockSparseMoe(config, index, { topK: config.numExpertsPerToken, scoring: 'softmax', selectionBias: null, groups: null, normalize: true, scale: 1 });
}

export const mixtralFamily: ModelFamily<MixtralConfig> = {
  name: 'Mixtral',
  modelTypes: ['mixtral'],
  parseConfig: parseMixtralConfig,
  create: (config, maxPositions, streaming, stage) => new DecoderModel(config, maxPositions, streaming, stage, (i) => mixtralMoe(config, i)),
};
