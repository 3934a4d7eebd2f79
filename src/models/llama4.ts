import type { Backend, KvCache, QueryTemperature, StepInputs, Tensor } from '../backend/backend.ts';
import { invalidArgument, invalidModel } from '../errors.ts';
import { projectionNames, SelfAttention } from '../layers/attention.ts';
import { LmHead, VocabEmbedding } from '../layers/embedding.ts';
import { GatedMlp } from '../layers/gated-mlp.ts';
import { MoeBlock } from '../layers/moe.ts';
import { RmsNorm } from '../layers/norm.ts';
import { loadLayers, parametersOf, type Layer, type LoraTarget, type ParameterSpec, type WeightSource, type WeightUploader } from '../layers/parameters.ts';
import { RotaryEmbedding } from '../layers/rotary.ts';
import type { StreamingWindow } from '../step/kv-cache-layout.ts';
import type { ModelFamily } from './causal-lm.ts';
import { DecoderStack, type ResidualStream } from './decoder-stack.ts';
import { parseDecoderFields, preNormLayerForward, type DecoderFields } from './decoder.ts';
import type { FeedForward, PreNormLayer } from './pre-norm-layer.ts';
import { ConfigFields, layerList, parseRopeLayers } from './hf-config.ts';
import { parseExpertsPerToken, parseNumExperts } from './moe-fields.ts';
import type { PipelineStage } from './pipeline-stage.ts';

/*
 * Llama 4 (`llama4_text`: Llama4ForCausalLM, and the language model of `llama4` checkpoints:
 * models/vision-language.ts). A pre-norm decoder whose layers differ in two ways:
 * - attention: most layers rotate q and k (RoPE, applied to interleaved pairs as complex numbers),
 *   L2-normalize them per head (`use_qk_norm`, no weight) and attend only within their chunk of
 *   `attention_chunk_size` positions; every `no_rope_layer_interval`-th layer (`no_rope_layers`
 *   says which) has no RoPE, attends to every earlier position and scales its queries by a
 *   position-dependent temperature (`attn_temperature_tuning`);
 * - feed-forward: every `interleave_moe_layer_step`-th layer (`moe_layers`) is a MoE block whose
 *   router picks the top-k logits and weights them by their sigmoid, and whose experts run on the
 *   weighted input, expert(w · x), beside an always-on shared expert; the others a dense MLP of
 *   `intermediate_size_mlp`.
 * The interleaved pairs are moved into rotate_half order at load, in the rows of q_proj and
 * k_proj: scores are dot products of a query and a key permuted alike, and the L2 norm does not
 * see the order, so the backend's rotary stays rotate_half. The norm, weightless, commutes with
 * the rotation (which keeps each pair's length): Keel applies it before, transformers after.
 */
export interface Llama4Config extends DecoderFields {
  /** Each routed (and the shared) expert's intermediate width (`intermediate_size`). */
  intermediateSize: number;
  /** The dense layers' intermediate width (`intermediate_size_mlp`). */
  denseIntermediateSize: number;
  numExperts: number;
  numExpertsPerToken: number;
  /** q, k, v and o carry a bias (`attention_bias`). */
  attentionBias: boolean;
  /** Per layer: a MoE block (else a dense MLP). */
  moeLayers: boolean[];
  /** Per layer: RoPE (else NoPE). */
  ropeLayers: boolean[];
  /** Per layer: its attention chunk, or null for full attention. */
  attentionChunks: (number | null)[];
  /** L2 norm of q and k on the RoPE layers (`use_qk_norm`). */
  qkL2Norm: boolean;
  /** Query temperature of the NoPE layers (`attn_temperature_tuning`, `floor_scale`, `attn_scale`), or null. */
  queryTemperature: QueryTemperature | null;
  /**
   * How the checkpoint holds the routed experts: fused (`experts.gate_up_proj` [E, hidden, 2n],
   * gate columns first, and `experts.down_proj` [E, n, hidden]: the Hub's and transformers'), or
   * per expert (`experts.E.gate_proj` / `up_proj` / `down_proj`, [out, in]), as llm-compressor
   * writes quantized Llama 4 checkpoints (and vLLM reads them).
   */
  expertTensors: 'fused' | 'per-expert';
}

/** A routed expert's own tensor (`...feed_forward.experts.E.gate_proj.weight` and its quantized parts). */
const PER_EXPERT_TENSOR = /^model\.layers\.\d+\.feed_forward\.experts\.\d+\./;

/** Llama4TextConfig's defaults. */
const DEFAULTS = { maxPositions: 4096 * 32, headDim: 128, rmsNormEps: 1e-5, numExperts: 16, chunk: 8192, floorScale: 8192, attnScale: 0.1 };

function parseLlama4Config(json: Record<string, unknown>, source: string, tensorNames: readonly string[] | null = null): Llama4Config {
  const fields = new ConfigFields(json, source);
  const decoder = parseDecoderFields(fields, { maxPositionEmbeddings: DEFAULTS.maxPositions, headDim: DEFAULTS.headDim });
  const numLayers = decoder.numLayers;
  const numExperts = json.num_local_experts == null && json.num_experts == null ? DEFAULTS.numExperts : parseNumExperts(fields);
  const ropeLayers = parseRopeLayers(fields, numLayers);
  const temperature = parseTemperatureTuning(fields);
  return {
    ...decoder,
    rmsNormEps: fields.positiveNumber('rms_norm_eps', DEFAULTS.rmsNormEps),
    intermediateSize: fields.positiveInt('intermediate_size'),
    denseIntermediateSize: fields.positiveInt('intermediate_size_mlp'),
    numExperts,
    numExpertsPerToken: json.num_experts_per_tok == null ? 1 : parseExpertsPerToken(fields, numExperts),
    attentionBias: fields.boolean('attention_bias', false),
    moeLayers: parseMoeLayers(fields, numLayers),
    ropeLayers,
    attentionChunks: parseAttentionChunks(fields, ropeLayers),
    qkL2Norm: fields.boolean('use_qk_norm', true),
    // transformers scales by cache_position + 1.
    queryTemperature: temperature ? { floorScale: fields.positiveNumber('floor_scale', DEFAULTS.floorScale), attnScale: fields.finiteNumber('attn_scale', DEFAULTS.attnScale), positionOffset: 1 } : null,
    expertTensors: tensorNames?.some((name) => PER_EXPERT_TENSOR.test(name)) ? 'per-expert' : 'fused',
  };
}

/**
 * `attn_temperature_tuning`: true or false, or a number read as transformers reads it, by its
 * truthiness (Llama 4 Scout's config.json says 4).
 */
function parseTemperatureTuning(fields: ConfigFields): boolean {
  const v = fields.raw('attn_temperature_tuning');
  if (v == null) return true;
  if (typeof v !== 'boolean' && !(typeof v === 'number' && Number.isFinite(v))) {
    throw invalidModel(`${fields.source}: "attn_temperature_tuning" must be true, false or a number (got ${JSON.stringify(v)})`);
  }
  return Boolean(v);
}

/** `moe_layers`, or every `interleave_moe_layer_step`-th layer from step - 1 on. */
function parseMoeLayers(fields: ConfigFields, numLayers: number): boolean[] {
  const listed = layerList(fields, 'moe_layers', numLayers, 'indices');
  const step = fields.positiveInt('interleave_moe_layer_step', 1);
  return Array.from({ length: numLayers }, (_, i) => (listed === null ? (i + 1) % step === 0 : listed.includes(i)));
}

/** `layer_types` ("chunked_attention" or "full_attention"; default: chunked where the layer rotates) with `attention_chunk_size`. */
function parseAttentionChunks(fields: ConfigFields, ropeLayers: boolean[]): (number | null)[] {
  const layerTypes = fields.raw('layer_types');
  let chunked = ropeLayers;
  if (layerTypes != null) {
    if (!Array.isArray(layerTypes) || layerTypes.length !== ropeLayers.length || !layerTypes.every((t) => t === 'chunked_attention' || t === 'full_attention')) {
      throw invalidModel(`${fields.source}: layer_types must list "chunked_attention" or "full_attention" for each of the ${ropeLayers.length} layers`);
    }
    chunked = layerTypes.map((t) => t === 'chunked_attention');
  }
  const chunk = fields.optionalPositiveInt('attention_chunk_size', DEFAULTS.chunk);
  if (chunk === null && chunked.some((c) => c)) throw invalidModel(`${fields.source}: chunked_attention layers need an attention_chunk_size (it is null)`);
  return chunked.map((c) => (c ? chunk : null));
}

class Llama4DecoderLayer implements Layer, PreNormLayer {
  readonly inputNorm: RmsNorm;
  readonly attention: SelfAttention;
  readonly postAttentionNorm: RmsNorm;
  readonly mlp: FeedForward;
  private readonly rotates: boolean;

  constructor(config: Llama4Config, index: number, rotary: { rope: RotaryEmbedding; none: RotaryEmbedding }) {
    const p = `model.layers.${index}`;
    const { hiddenSize, numHeads, numKvHeads, headDim, rmsNormEps: eps } = config;
    this.rotates = config.ropeLayers[index];
    this.inputNorm = new RmsNorm(`${p}.input_layernorm.weight`, hiddenSize, eps);
    const l2 = (which: string) => new RmsNorm(`${p}.self_attn ${which} L2 norm`, headDim, eps, { weightless: true });
    this.attention = new SelfAttention({
      layer: index,
      hiddenSize,
      numHeads,
      numKvHeads,
      headDim,
      scale: headDim ** -0.5,
      slidingWindow: null,
      attentionChunk: config.attentionChunks[index],
      queryTemperature: this.rotates ? null : config.queryTemperature,
      softcap: null,
      sinks: null,
      rotary: this.rotates ? rotary.rope : rotary.none,
      qkNorm: this.rotates && config.qkL2Norm ? { q: l2('q'), k: l2('k') } : null,
      ...projectionNames(`${p}.self_attn`),
      qkvBias: config.attentionBias,
      oBias: config.attentionBias,
      interleavedRope: this.rotates,
    });
    this.postAttentionNorm = new RmsNorm(`${p}.post_attention_layernorm.weight`, hiddenSize, eps);
    this.mlp = feedForward(config, index);
  }

  private get sublayers(): Layer[] {
    return [this.inputNorm, this.attention, this.postAttentionNorm, this.mlp];
  }

  parameters(): ParameterSpec[] {
    return parametersOf(this.sublayers);
  }

  load(source: WeightSource, uploader: WeightUploader): void {
    loadLayers(this.sublayers, source, uploader);
  }

  loraTargets(): LoraTarget[] {
    return [...this.attention.loraTargets(), ...(this.mlp.loraTargets?.() ?? [])];
  }
}

/** Layer `index`'s `feed_forward`: a MoE block (router, fused experts, shared expert) or a dense MLP. */
function feedForward(config: Llama4Config, index: number): FeedForward {
  const p = `model.layers.${index}.feed_forward`;
  const { hiddenSize } = config;
  const gatedMlp = (prefix: string, width: number, sharedExpert = false) =>
    new GatedMlp({ gate: `${prefix}.gate_proj.weight`, up: `${prefix}.up_proj.weight`, down: `${prefix}.down_proj.weight` }, hiddenSize, width, config.activation, { sharedExpert });
  if (!config.moeLayers[index]) return gatedMlp(p, config.denseIntermediateSize);
  return new MoeBlock({
    hiddenSize,
    intermediateSize: config.intermediateSize,
    numExperts: config.numExperts,
    router: `${p}.router.weight`,
    routerBias: false,
    // sigmoid(top-k logits) are the top k of the sigmoid scores, unnormalized.
    routing: { topK: config.numExpertsPerToken, scoring: 'sigmoid', selectionBias: null, groups: null, normalize: false, scale: 1, weightInputs: true },
    experts:
      config.expertTensors === 'per-expert'
        ? { layout: 'per-expert', name: (e, projection) => `${p}.experts.${e}.${projection}_proj.weight` }
        : { layout: 'fused-halves', gateUp: `${p}.experts.gate_up_proj`, gateUpBias: null, down: `${p}.experts.down_proj`, downBias: null },
    activation: config.activation,
    shared: { mlp: gatedMlp(`${p}.shared_expert`, config.intermediateSize, true), gate: null },
  });
}

export class Llama4Model extends DecoderStack<Llama4Config, Llama4DecoderLayer> {
  constructor(config: Llama4Config, maxPositions: number, streaming: StreamingWindow | null, stage: PipelineStage) {
    if (streaming !== null) throw invalidArgument('StreamingLLM (--streaming-sinks/--streaming-window) does not combine with Llama 4\'s chunked and NoPE attention layers');
    const rotaryOf = (scaling: Llama4Config['ropeScaling']) =>
      new RotaryEmbedding({ rotaryDim: config.headDim, theta: config.ropeTheta, scaling, maxPositionEmbeddings: config.maxPositionEmbeddings }, maxPositions);
    const rope = rotaryOf(config.ropeScaling);
    const none = rotaryOf({ type: 'none' });
    const embedding = new VocabEmbedding('model.embed_tokens.weight', config.vocabSize, config.hiddenSize);
    super(config, {
      rotaries: [rope, none],
      embedding,
      layers: Array.from({ length: config.numLayers }, (_, i) => new Llama4DecoderLayer(config, i, { rope, none })),
      finalNorm: new RmsNorm('model.norm.weight', config.hiddenSize, config.rmsNormEps),
      lmHead: new LmHead('lm_head.weight', embedding, config.tieWordEmbeddings),
    }, stage);
  }

  protected layerForward(b: Backend, layer: Llama4DecoderLayer, stream: ResidualStream, step: StepInputs, cache: KvCache): Tensor {
    return preNormLayerForward(b, layer, stream, step, cache);
  }
}

export const llama4Family: ModelFamily<Llama4Config> = {
  name: 'Llama 4',
  modelTypes: ['llama4_text'],
  parseConfig: parseLlama4Config,
  create: (config, maxPositions, streaming, stage) => new Llama4Model(config, maxPositions, streaming, stage),
};
