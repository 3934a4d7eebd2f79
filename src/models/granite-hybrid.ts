import type { Backend, KvCache, StepInputs, Tensor } from '../backend/backend.ts';
import { invalidModel } from '../errors.ts';
import { LmHead, VocabEmbedding } from '../layers/embedding.ts';
import { GatedMlp } from '../layers/gated-mlp.ts';
import { Mamba2Mixer } from '../layers/mamba2-mixer.ts';
import { RmsNorm } from '../layers/norm.ts';
import { ComposedLayer, type Layer, type LoraTarget } from '../layers/parameters.ts';
import { RotaryEmbedding } from '../layers/rotary.ts';
import type { StreamingWindow } from '../step/kv-cache-layout.ts';
import type { HiddenStateTap } from './causal-lm.ts';
import type { ModelFamily } from './causal-lm.ts';
import { DecoderLayer, decoderRope, parseDecoderFields, preNormLayerForward, type DecoderConfig, type DecoderMultipliers } from './decoder.ts';
import { DecoderStack, type ResidualStream } from './decoder-stack.ts';
import { graniteMoe } from './granite-moe.ts';
import { ConfigFields } from './hf-config.ts';
import { parseAttentionBiases, parseGraniteMultipliers } from './llama.ts';
import { parseExpertsPerToken } from './moe-fields.ts';
import type { PipelineStage } from './pipeline-stage.ts';
import type { FeedForward, PreNormLayer } from './pre-norm-layer.ts';

/*
 * IBM's Granite 4.0 hybrids (`granitemoehybrid`: granite-4.0-h-tiny / -small / -micro, and the
 * attention-only granite-4.0-micro): Granite's pre-norm layers and multipliers (embedding,
 * attention scale, residual, logits: DecoderConfig.multipliers), each layer's mixer a Mamba-2
 * mixer (layers/mamba2-mixer.ts) or GQA attention, as `layer_types` says; attention rotates q and
 * k only where `position_embedding_type` is "rope" (the hybrids' configs say "nope"). The
 * feed-forward is GraniteMoE's block (granite-moe.ts: `block_sparse_moe` experts plus the
 * `shared_mlp` every token runs through), or the shared MLP alone where `num_local_experts` is 0.
 */

export interface GraniteHybridConfig extends DecoderConfig {
  multipliers: DecoderMultipliers;
  /** Per layer: a Mamba-2 mixer (true) or attention. */
  mambaLayers: boolean[];
  mamba: {
    numHeads: number;
    headDim: number;
    numGroups: number;
    stateSize: number;
    convKernel: number;
    convBias: boolean;
    projectionBias: boolean;
    /** `time_step_limit`: the scan's Δ clamped to [dtMin, dtMax]. */
    dtMin: number;
    dtMax: number;
  };
  /** Each expert's width (`intermediate_size`). */
  intermediateSize: number;
  /** 0: every layer's feed-forward is the shared MLP alone. */
  numExperts: number;
  numExpertsPerToken: number;
  /** The shared MLP's width (`shared_intermediate_size`). */
  sharedIntermediateSize: number;
}

/** GraniteMoeHybridConfig's defaults for keys a config.json may leave out. */
const DEFAULTS = { maxPositionEmbeddings: 2048, intermediateSize: 11008, numExperts: 8, numExpertsPerToken: 2, sharedIntermediateSize: 1024 };
const MAMBA_DEFAULTS = { numHeads: 128, numGroups: 1, stateSize: 256, convKernel: 4, expand: 2 };

function parseGraniteHybridConfig(json: Record<string, unknown>, source: string): GraniteHybridConfig {
  const fields = new ConfigFields(json, source);
  const decoder = parseDecoderFields(fields, DEFAULTS);
  // The Mamba convolution runs hidden_act too, which Keel's op fixes to silu (as the Hub's models have it).
  if (decoder.activation.kind !== 'silu') throw invalidModel(`${source}: hidden_act ${JSON.stringify(fields.raw('hidden_act'))} is not supported for granitemoehybrid (its Mamba-2 convolution runs silu)`);
  const numExperts = fields.nonNegativeInt('num_local_experts', DEFAULTS.numExperts);
  const rope = fields.raw('position_embedding_type') === 'rope';
  return {
    ...decoder,
    ...parseAttentionBiases(fields, 'attention_bias'),
    qkNorm: false,
    slidingWindows: new Array<number | null>(decoder.numLayers).fill(null),
    ropeLayers: new Array<boolean>(decoder.numLayers).fill(rope),
    multipliers: parseGraniteMultipliers(fields),
    mambaLayers: parseLayerTypes(fields, decoder.numLayers),
    mamba: parseMamba(fields, decoder.hiddenSize),
    intermediateSize: fields.positiveInt('intermediate_size', DEFAULTS.intermediateSize),
    numExperts,
    numExpertsPerToken: numExperts === 0 ? 0 : parseExpertsPerToken(fields, numExperts, DEFAULTS.numExpertsPerToken),
    sharedIntermediateSize: fields.positiveInt('shared_intermediate_size', DEFAULTS.sharedIntermediateSize),
  };
}

/** transformers' layer type names, old and new: a Mamba layer, or attention. */
const LAYER_TYPES: Readonly<Record<string, boolean>> = { mamba: true, linear_attention: true, attention: false, full_attention: false };

/** `layer_types` (or its alias `layers_block_type`); absent: every layer Mamba, as GraniteMoeHybridConfig defaults. */
function parseLayerTypes(fields: ConfigFields, numLayers: number): boolean[] {
  const key = fields.raw('layer_types') != null ? 'layer_types' : 'layers_block_type';
  const types = fields.raw(key);
  if (types == null) return new Array<boolean>(numLayers).fill(true);
  if (!Array.isArray(types) || types.length !== numLayers || !types.every((t) => typeof t === 'string' && t in LAYER_TYPES)) {
    throw invalidModel(`${fields.source}: ${key} must list "mamba" or "attention" (or "linear_attention" / "full_attention") for each of the ${numLayers} layers (got ${JSON.stringify(types)})`);
  }
  return types.map((t: string) => LAYER_TYPES[t]);
}

function parseMamba(fields: ConfigFields, hiddenSize: number): GraniteHybridConfig['mamba'] {
  const numHeads = fields.positiveInt('mamba_n_heads', MAMBA_DEFAULTS.numHeads);
  const inner = fields.positiveInt('mamba_expand', MAMBA_DEFAULTS.expand) * hiddenSize;
  if (inner % numHeads !== 0) throw invalidModel(`${fields.source}: mamba_n_heads (${numHeads}) must divide mamba_expand × hidden_size (${inner})`);
  const headDim = fields.raw('mamba_d_head') === 'auto' ? inner / numHeads : fields.positiveInt('mamba_d_head', inner / numHeads);
  if (headDim * numHeads !== inner) throw invalidModel(`${fields.source}: mamba_d_head (${headDim}) × mamba_n_heads (${numHeads}) must be mamba_expand × hidden_size (${inner})`);
  const numGroups = fields.positiveInt('mamba_n_groups', MAMBA_DEFAULTS.numGroups);
  if (numHeads % numGroups !== 0) throw invalidModel(`${fields.source}: mamba_n_groups (${numGroups}) must divide mamba_n_heads (${numHeads})`);
  return {
    numHeads,
    headDim,
    numGroups,
    stateSize: fields.positiveInt('mamba_d_state', MAMBA_DEFAULTS.stateSize),
    convKernel: fields.positiveInt('mamba_d_conv', MAMBA_DEFAULTS.convKernel),
    convBias: fields.boolean('mamba_conv_bias', true),
    projectionBias: fields.boolean('mamba_proj_bias', false),
    ...parseTimeStepLimit(fields),
  };
}

/**
 * `time_step_limit`, [min, max] (default [0, ∞]; null: no limit), its values numbers or
 * transformers 5's tagged floats ({"__float__": "Infinity"}, as it writes an infinity to JSON).
 */
function parseTimeStepLimit(fields: ConfigFields): { dtMin: number; dtMax: number } {
  const limit = fields.raw('time_step_limit');
  if (limit == null) return { dtMin: 0, dtMax: Infinity };
  const tagged: Readonly<Record<string, number>> = { Infinity: Infinity, '-Infinity': -Infinity };
  const value = (v: unknown) => (typeof v === 'number' ? v : typeof v === 'object' && v !== null && '__float__' in v ? tagged[String(v.__float__)] : undefined);
  const values = Array.isArray(limit) && limit.length === 2 ? limit.map(value) : [];
  if (values.length !== 2 || values.some((v) => v === undefined) || !(values[0]! <= values[1]!)) {
    throw invalidModel(`${fields.source}: time_step_limit must be [min, max] with min ≤ max (got ${JSON.stringify(limit)})`);
  }
  return { dtMin: values[0]!, dtMax: values[1]! };
}

/** Layer `index`'s feed-forward: the MoE block with its shared MLP, or the shared MLP alone. */
function hybridFeedForward(config: GraniteHybridConfig, index: number): FeedForward {
  if (config.numExperts > 0) return graniteMoe(config, index);
  const p = `model.layers.${index}.shared_mlp`;
  return new GatedMlp({ gateUp: `${p}.input_linear.weight`, down: `${p}.output_linear.weight` }, config.hiddenSize, config.sharedIntermediateSize, config.activation);
}

/** A Mamba layer: h += mamba(inputNorm(h)); h += feedForward(postAttentionNorm(h)). */
class MambaLayer extends ComposedLayer implements PreNormLayer {
  readonly inputNorm: RmsNorm;
  readonly attention: Mamba2Mixer;
  readonly postAttentionNorm: RmsNorm;
  readonly mlp: FeedForward;

  constructor(config: GraniteHybridConfig, index: number) {
    super();
    const p = `model.layers.${index}`;
    const { hiddenSize, rmsNormEps: eps } = config;
    this.inputNorm = new RmsNorm(`${p}.input_layernorm.weight`, hiddenSize, eps);
    this.attention = new Mamba2Mixer({ layer: index, prefix: `${p}.mamba`, hiddenSize, eps, ...config.mamba });
    this.postAttentionNorm = new RmsNorm(`${p}.post_attention_layernorm.weight`, hiddenSize, eps);
    this.mlp = hybridFeedForward(config, index);
  }

  protected get sublayers(): Layer[] {
    return [this.inputNorm, this.attention, this.postAttentionNorm, this.mlp];
  }

  loraTargets(): LoraTarget[] {
    return [];
  }
}

/** Embedding times embedding_multiplier, Mamba and attention layers, final norm, LM head with logits / logits_scaling. */
export class GraniteHybridModel extends DecoderStack<GraniteHybridConfig, MambaLayer | DecoderLayer> {
  constructor(config: GraniteHybridConfig, maxPositions: number, streaming: StreamingWindow | null, stage: PipelineStage) {
    // NoPE attention reads a table of identity rows, so its keys are cached through the same op.
    const rope = decoderRope(config);
    const rotary = new RotaryEmbedding(config.ropeLayers.every((r) => r) ? rope : { ...rope, scaling: { type: 'none' } }, maxPositions, streaming);
    const embedding = new VocabEmbedding('model.embed_tokens.weight', config.vocabSize, config.hiddenSize, config.multipliers.embedding);
    const layerOf = (i: number) => (config.mambaLayers[i] ? new MambaLayer(config, i) : new DecoderLayer(config, i, rotary, null, hybridFeedForward(config, i)));
    super(
      config,
      {
        rotaries: [rotary],
        embedding,
        layers: Array.from({ length: config.numLayers }, (_, i) => layerOf(i)),
        finalNorm: new RmsNorm('model.norm.weight', config.hiddenSize, config.rmsNormEps),
        lmHead: new LmHead('lm_head.weight', embedding, config.tieWordEmbeddings),
      },
      stage,
    );
  }

  protected layerForward(b: Backend, layer: MambaLayer | DecoderLayer, stream: ResidualStream, step: StepInputs, cache: KvCache): Tensor {
    return preNormLayerForward(b, layer, stream, step, cache, this.config.multipliers.residual);
  }

  protected override finalLogits(b: Backend, step: StepInputs, stream: ResidualStream, tap: HiddenStateTap | undefined): Tensor {
    const logits = super.finalLogits(b, step, stream, tap);
    b.scale(logits, 1 / this.config.multipliers.logits);
    return logits;
  }
}

export const graniteHybridFamily: ModelFamily<GraniteHybridConfig> = {
  name: 'Granite 4.0 hybrid (Mamba-2 + attention)',
  modelTypes: ['granitemoehybrid'],
  parseConfig: parseGraniteHybridConfig,
  create: (config, maxPositions, streaming, stage) => new GraniteHybridModel(config, maxPositions, streaming, stage),
};
