import { invalidModel } from '../errors.ts';
import { GatedMlp } from '../layers/gated-mlp.ts';
import type { RopeScaling } from '../layers/rotary.ts';
import type { ModelFamily } from './causal-lm.ts';
import { DecoderModel, LLAMA_NORM_NAMES, type DecoderConfig } from './decoder.ts';
import type { StreamingWindow } from '../step/kv-cache-layout.ts';
import type { PipelineStage } from './pipeline-stage.ts';
import { ConfigFields, parseActivation, parseCommonFields, parseHeadDim, parseHeads, parseLongrope, parsePartialRotary, parseRopeParameters, ropeParameterFields } from './hf-config.ts';

/**
 * Phi-3 (and Phi-3.5-mini, Phi-4-mini): Llama's layers with q/k/v and gate/up each stored as one
 * fused tensor, LongRoPE, and a rotary dim that may be a fraction of the head.
 */
export interface Phi3Config extends DecoderConfig {
  intermediateSize: number;
}

/** Phi3Config's defaults. */
const DEFAULT_MAX_POSITIONS = 4096;
const DEFAULT_ORIGINAL_MAX_POSITIONS = 4096;
const DEFAULT_ROPE_THETA = 10000;

function parsePhi3Config(json: Record<string, unknown>, source: string): Phi3Config {
  const fields = new ConfigFields(json, source);
  const common = parseCommonFields(fields, 'phi3');
  const { numHeads, numKvHeads } = parseHeads(fields);
  const maxPositionEmbeddings = fields.positiveInt('max_position_embeddings', DEFAULT_MAX_POSITIONS);
  const headDim = parseHeadDim(fields, common.hiddenSize, numHeads);
  const params = ropeParameterFields(fields);
  const rotaryDim = parsePartialRotary(fields, headDim, 1);
  return {
    ...common,
    contextLength: maxPositionEmbeddings,
    intermediateSize: fields.positiveInt('intermediate_size'),
    numHeads,
    numKvHeads,
    headDim,
    rotaryDim,
    rmsNormEps: fields.positiveNumber('rms_norm_eps', 1e-5),
    ...parsePhi3Rope(fields, params, rotaryDim, maxPositionEmbeddings),
    maxPositionEmbeddings,
    attentionBias: false,
    outputBias: false,
    qkNorm: false,
    // Phi-3-mini-4k slides every layer.
    slidingWindows: new Array<number | null>(common.numLayers).fill(fields.optionalPositiveInt('sliding_window', null)),
    ropeLayers: new Array<boolean>(common.numLayers).fill(true),
    fusedQkv: true,
    attentionSinks: false,
    activation: parseActivation(fields, 'hidden_act', 'silu'),
    multipliers: null,
    queryTemperature: null,
    qkNormAfterRope: false,
    qkNormOver: 'head',
    interleavedRope: false,
    normNames: LLAMA_NORM_NAMES,
  };
}

/**
 * Phi-3's RoPE: default, or LongRoPE (also spelled "su", and "yarn" in early Phi-3 configs, which
 * transformers reads as LongRoPE). LongRoPE's original context is the top-level
 * original_max_position_embeddings (Phi3Config default 4096), which transformers puts above the
 * one in the dict; its attention factor is the dict's, or √(1 + ln(factor) / ln(original)) with
 * factor = max_position_embeddings / original unless the dict sets one.
 */
function parsePhi3Rope(fields: ConfigFields, params: ConfigFields, rotaryDim: number, maxPositionEmbeddings: number): { ropeTheta: number; ropeScaling: RopeScaling } {
  const type = params.raw('rope_type') ?? params.raw('type') ?? 'default';
  if (type === 'default') return parseRopeParameters(params, fields, maxPositionEmbeddings, DEFAULT_ROPE_THETA);
  if (type !== 'longrope' && type !== 'su' && type !== 'yarn') {
    throw invalidModel(`${params.source}: rope type ${JSON.stringify(type)} is not supported for phi3 (supported: default, longrope)`);
  }
  const ropeTheta = params.raw('rope_theta') != null ? params.positiveNumber('rope_theta') : fields.positiveNumber('rope_theta', DEFAULT_ROPE_THETA);
  const ropeScaling = parseLongrope(params, fields.positiveInt('original_max_position_embeddings', DEFAULT_ORIGINAL_MAX_POSITIONS), maxPositionEmbeddings);
  for (const [key, list] of [['short_factor', ropeScaling.shortFactor], ['long_factor', ropeScaling.longFactor]] as const) {
    if (list.length !== rotaryDim / 2) throw invalidModel(`${params.source}: ${key} has ${list.length} entries; rotary dim ${rotaryDim} needs ${rotaryDim / 2}`);
  }
  return { ropeTheta, ropeScaling };
}

/** Llama's decoder with fused q/k/v and gate/up tensors. */
export class Phi3Model extends DecoderModel {
  constructor(config: Phi3Config, maxPositions: number, streaming: StreamingWindow | null, stage: PipelineStage) {
    super(config, maxPositions, streaming, stage, (i) => {
      const p = `model.layers.${i}.mlp`;
      return new GatedMlp({ gateUp: `${p}.gate_up_proj.weight`, down: `${p}.down_proj.weight` }, config.hiddenSize, config.intermediateSize, config.activation);
    });
  }
}

export const phi3Family: ModelFamily<Phi3Config> = {
  name: 'Phi-3',
  modelTypes: ['phi3'],
  parseConfig: parsePhi3Config,
  create: (config, maxPositions, streaming, stage) => new Phi3Model(config, maxPositions, streaming, stage),
};
