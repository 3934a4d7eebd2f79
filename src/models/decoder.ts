import type { Activation, Backend, KvCache, QueryTemperature, StepInputs, Tensor } from '../backend/backend.ts';
import { projectionNames, qkNormLayers, SelfAttention } from '../layers/attention.ts';
import { LmHead, VocabEmbedding } from '../layers/embedding.ts';
import { LayerNorm, RmsNorm, type ResidualNorm } from '../layers/norm.ts';
import { ComposedLayer, type Layer, type LoraTarget } from '../layers/parameters.ts';
import { RotaryEmbedding, ropeContextLength, type RopeScaling, type RotaryConfig } from '../layers/rotary.ts';
import { DecoderStack, type ResidualStream } from './decoder-stack.ts';
import type { FeedForward, PreNormLayer } from './pre-norm-layer.ts';
import { ConfigFields, parseActivation, parseCommonFields, parseHeadDim, parseHeads, parsePartialRotary, parseRope } from './hf-config.ts';
import type { StreamingWindow } from '../step/kv-cache-layout.ts';
import type { ModelConfig } from './model-config.ts';
import type { CausalLM, HiddenStateTap } from './causal-lm.ts';
import type { PipelineStage } from './pipeline-stage.ts';

/**
 * The pre-norm decoder shared by the Llama family and its mixture-of-experts relatives (Mixtral,
 * Qwen2-MoE, Qwen3-MoE): embedding, layers of RMSNorm + attention and RMSNorm + feed-forward,
 * final norm, LM head. A family differs in its config keys, its attention options and its
 * feed-forward (a dense gated MLP or a MoE block).
 */
export interface DecoderConfig extends ModelConfig {
  numHeads: number;
  numKvHeads: number;
  /** Per-head dimension; may differ from hiddenSize / numHeads (config key `head_dim`). */
  headDim: number;
  /** Leading dims of each head that rotate: the head dim, or a fraction of it (Phi-4-mini's partial_rotary_factor). */
  rotaryDim: number;
  /** The norms' epsilon (a LayerNorm family's `layer_norm_eps`). */
  rmsNormEps: number;
  /** The layers' and the final norm: RMSNorm (absent), or LayerNorm with a weight and a bias (Jais 2's). */
  norm?: 'rms' | 'layer';
  ropeTheta: number;
  ropeScaling: RopeScaling;
  maxPositionEmbeddings: number;
  /** q/k/v projections carry a bias. */
  attentionBias: boolean;
  /** o_proj carries a bias. */
  outputBias: boolean;
  /** Per-head RMSNorm on q and k before RoPE (Qwen3), or after it with `qkNormAfterRope`. */
  qkNorm: boolean;
  /** The q/k norms apply to the rotated heads (Hunyuan), not before RoPE. */
  qkNormAfterRope: boolean;
  /** Each head's rotary dims pair as (x[2i], x[2i+1]) (ERNIE 4.5), not rotate_half's halves. */
  interleavedRope: boolean;
  /** The q/k norms' span: each head (Qwen3), or the whole q and k projections, every head together (MiniMax-M2, as OLMo 2). */
  qkNormOver: 'head' | 'projection';
  /** Checkpoint names of the layers' norms. */
  normNames: DecoderNormNames;
  /** Each layer's window: it attends to at most this many most recent tokens; null = full. */
  slidingWindows: (number | null)[];
  /** Whether each layer rotates q and k: false for a NoPE layer (SmolLM3's `no_rope_layers`). */
  ropeLayers: boolean[];
  /** q, k and v are stored as one `self_attn.qkv_proj` tensor (Phi-3). */
  fusedQkv: boolean;
  /** Each head has a learned sink logit in `self_attn.sinks` (gpt-oss). */
  attentionSinks: boolean;
  /** The gated MLPs' (and experts') activation: `hidden_act`. */
  activation: Activation;
  /** Granite's multipliers; null for the other families (embeddings as they are, scores by head_dim^-0.5, ...). */
  multipliers: DecoderMultipliers | null;
  /** Every layer's query scale by position (Ministral 3's llama_4_scaling_beta), or null. */
  queryTemperature: QueryTemperature | null;
  /** Attention's output times σ(`self_attn.gate_proj`(x)) before o_proj (AFMoE); absent: no gate. */
  outputGate?: boolean;
}

/** Names, under `model.layers.<index>.`, of a pre-norm layer's norms, which some families spell their own way. */
export interface DecoderNormNames {
  /** Before attention: `input_layernorm` (Apertus: `attention_layernorm`). */
  input: string;
  /** Before the MLP: `post_attention_layernorm` (Apertus: `feedforward_layernorm`). */
  postAttention: string;
  /** Per-head query and key norms: `self_attn.q_norm` / `self_attn.k_norm` (Hunyuan: `query_layernorm` / `key_layernorm`). */
  q: string;
  k: string;
  /** Sandwich norms of attention's and the MLP's outputs (GLM-4: `post_self_attn_layernorm`, `post_mlp_layernorm`); absent: none. */
  attentionOutput?: string;
  mlpOutput?: string;
}

/** Llama's names, which most families keep. */
export const LLAMA_NORM_NAMES: DecoderNormNames = { input: 'input_layernorm', postAttention: 'post_attention_layernorm', q: 'self_attn.q_norm', k: 'self_attn.k_norm' };

/** Granite's scalings of the Llama graph. */
export interface DecoderMultipliers {
  /** Embeddings times this (`embedding_multiplier`). */
  embedding: number;
  /** Each sublayer's output times this before it joins the residual stream (`residual_multiplier`). */
  residual: number;
  /** The scale of q·k, in place of head_dim^-0.5 (`attention_multiplier`). */
  attention: number;
  /** Logits divided by this (`logits_scaling`). */
  logits: number;
}

/** The keys every llama-like decoder reads the same way; each family adds its attention options and feed-forward. */
export type DecoderFields = Omit<DecoderConfig, 'attentionBias' | 'outputBias' | 'qkNorm' | 'slidingWindows'>;

/**
 * Common keys, heads, `head_dim` (default hidden_size / num_attention_heads, or `headDimFallback`
 * where the family's config class has its own), RMSNorm epsilon, RoPE (theta default 1e4, or the
 * family's `defaults.ropeTheta`) and the context length it gives,
 * and the MLP's activation: `hidden_act`, or `defaults.activation` for a family whose MLP ignores it.
 * `defaults` holds the family's config class defaults where they differ from Llama's; a family
 * whose class defaults `partial_rotary_factor` (`defaults.partialRotaryFactor`) rotates that
 * fraction of each head, the others refuse the key.
 */
export function parseDecoderFields(
  fields: ConfigFields,
  defaults: { maxPositionEmbeddings: number; headDim?: number; numKvHeads?: number; activation?: Activation; rmsNormEps?: number; partialRotaryFactor?: number; ropeTheta?: number },
): DecoderFields {
  const common = parseCommonFields(fields, fields.raw('model_type') as string);
  const { numHeads, numKvHeads } = parseHeads(fields, defaults.numKvHeads);
  const maxPositionEmbeddings = fields.positiveInt('max_position_embeddings', defaults.maxPositionEmbeddings);
  const partialRotary = defaults.partialRotaryFactor !== undefined;
  const rope = parseRope(fields, maxPositionEmbeddings, { partialRotary, defaultTheta: defaults.ropeTheta });
  const headDim = parseHeadDim(fields, common.hiddenSize, numHeads, defaults.headDim);
  return {
    ...common,
    contextLength: ropeContextLength({ scaling: rope.ropeScaling, maxPositionEmbeddings }),
    numHeads,
    numKvHeads,
    headDim,
    rmsNormEps: fields.positiveNumber('rms_norm_eps', defaults.rmsNormEps ?? 1e-6),
    ...rope,
    maxPositionEmbeddings,
    rotaryDim: partialRotary ? parsePartialRotary(fields, headDim, defaults.partialRotaryFactor!) : headDim,
    // What most families have; the few that differ set their own.
    ropeLayers: new Array<boolean>(common.numLayers).fill(true),
    fusedQkv: false,
    attentionSinks: false,
    activation: defaults.activation ?? parseActivation(fields, 'hidden_act', 'silu'),
    multipliers: null,
    queryTemperature: null,
    qkNormAfterRope: false,
    qkNormOver: 'head',
    interleavedRope: false,
    normNames: LLAMA_NORM_NAMES,
  };
}

/**
 * One layer of a pre-norm decoder. The residual stream is summed in HF's order (embeddings +
 * attention out + mlp out + ...); each sublayer's output is added inside the next fused
 * addRmsNorm, so the MLP's output is left pending. A sandwich layer norms each sublayer's output
 * first; `residualScale` then multiplies it (Granite's residual_multiplier).
 */
export function preNormLayerForward(b: Backend, layer: PreNormLayer, { residual, pending }: ResidualStream, step: StepInputs, cache: KvCache, residualScale = 1): Tensor {
  const output = (x: Tensor, norm: ResidualNorm | null | undefined) => {
    const normed = norm ? norm.forward(b, x) : x;
    if (residualScale !== 1) b.scale(normed, residualScale);
    return normed;
  };
  const attnIn: Tensor = pending === null ? layer.inputNorm.forward(b, residual) : layer.inputNorm.addAndForward(b, pending, residual);
  const attnOut = output(layer.attention.forward(b, attnIn, step, cache), layer.attentionOutputNorm);
  return output(layer.mlp.forward(b, layer.postAttentionNorm.addAndForward(b, attnOut, residual), step), layer.mlpOutputNorm);
}

/**
 * One pre-norm layer: h += attention(inputNorm(h)); h += mlp(postAttentionNorm(h)), or with
 * sandwich norms (`normNames.attentionOutput` / `mlpOutput`) each output normed before the add.
 */
export class DecoderLayer extends ComposedLayer implements PreNormLayer {
  readonly inputNorm: ResidualNorm;
  readonly attention: SelfAttention;
  readonly attentionOutputNorm: ResidualNorm | null;
  readonly postAttentionNorm: ResidualNorm;
  readonly mlp: FeedForward;
  readonly mlpOutputNorm: ResidualNorm | null;

  /**
   * Hugging Face's names under `model.layers.<index>`: the norms' (`config.normNames`), self_attn.*.
   * `identity` is the model's table of identity rows where its q/k norms follow RoPE, else null.
   * Its K/V go to layer `cacheLayer` of the cache it runs with (an MTP layer's own cache: 0).
   */
  constructor(config: DecoderConfig, index: number, rotary: RotaryEmbedding, identity: RotaryEmbedding | null, mlp: FeedForward, cacheLayer = index) {
    super();
    const p = `model.layers.${index}`;
    const { hiddenSize, numHeads, numKvHeads, headDim, rmsNormEps: eps } = config;
    const names = config.normNames;
    this.inputNorm = decoderNorm(config, `${p}.${names.input}`);
    this.attention = new SelfAttention({
      layer: cacheLayer,
      hiddenSize,
      numHeads,
      numKvHeads,
      headDim,
      scale: config.multipliers?.attention ?? headDim ** -0.5,
      slidingWindow: config.slidingWindows[index],
      queryTemperature: config.queryTemperature,
      softcap: null,
      sinks: config.attentionSinks ? `${p}.self_attn.sinks` : null,
      rotary,
      ...(config.qkNorm ? qkNormLayers({ q: `${p}.${names.q}.weight`, k: `${p}.${names.k}.weight` }, config.qkNormOver, config, eps) : { qkNorm: null }),
      qkNormAfterRope: config.qkNormAfterRope ? { identity: identity! } : null,
      ...projectionNames(`${p}.self_attn`),
      ...(config.fusedQkv && { qkv: { qkv: `${p}.self_attn.qkv_proj.weight` } }),
      qkvBias: config.attentionBias,
      oBias: config.outputBias,
      interleavedRope: config.interleavedRope,
      ...(config.outputGate && { projectedGate: { name: `${p}.self_attn.gate_proj.weight`, perHead: false, activation: 'sigmoid' } }),
    });
    const norm = (name: string | undefined) => (name === undefined ? null : decoderNorm(config, `${p}.${name}`));
    this.attentionOutputNorm = norm(names.attentionOutput);
    this.postAttentionNorm = decoderNorm(config, `${p}.${names.postAttention}`);
    this.mlp = mlp;
    this.mlpOutputNorm = norm(names.mlpOutput);
  }

  get sublayers(): Layer[] {
    return [this.inputNorm, this.attention, this.attentionOutputNorm, this.postAttentionNorm, this.mlp, this.mlpOutputNorm].filter((l) => l !== null);
  }

  loraTargets(): LoraTarget[] {
    return [...this.attention.loraTargets(), ...(this.mlp.loraTargets?.() ?? [])];
  }
}

/** The norm of the module at `name` (`model.norm`, `model.layers.3.input_layernorm`): its `.weight`, and a LayerNorm's `.bias`. */
function decoderNorm(config: DecoderConfig, name: string): ResidualNorm {
  return config.norm === 'layer' ? new LayerNorm(name, config.hiddenSize, config.rmsNormEps) : new RmsNorm(`${name}.weight`, config.hiddenSize, config.rmsNormEps);
}

/** The rotary table's settings of a decoder's layers. */
export function decoderRope(config: Pick<DecoderConfig, 'rotaryDim' | 'ropeTheta' | 'ropeScaling' | 'maxPositionEmbeddings'>): RotaryConfig {
  return { rotaryDim: config.rotaryDim, theta: config.ropeTheta, scaling: config.ropeScaling, maxPositionEmbeddings: config.maxPositionEmbeddings };
}

/** The pre-norm decoder-only model. */
export class DecoderModel extends DecoderStack<DecoderConfig, DecoderLayer> {
  /** `mlpOf(index)` is layer `index`'s feed-forward. */
  constructor(config: DecoderConfig, maxPositions: number, streaming: StreamingWindow | null, stage: PipelineStage, mlpOf: (index: number) => FeedForward) {
    const rope = decoderRope(config);
    const rotary = new RotaryEmbedding(rope, maxPositions, streaming);
    // NoPE layers read a table of identity rows, so their keys are cached through the same op; so
    // do the normed keys of layers that norm after RoPE.
    const none = config.ropeLayers.every((r) => r) && !config.qkNormAfterRope ? null : new RotaryEmbedding({ ...rope, scaling: { type: 'none' } }, maxPositions, streaming);
    const embedding = new VocabEmbedding('model.embed_tokens.weight', config.vocabSize, config.hiddenSize, config.multipliers?.embedding ?? 1);
    super(config, {
      rotaries: none === null ? [rotary] : [rotary, none],
      embedding,
      layers: Array.from({ length: config.numLayers }, (_, i) => new DecoderLayer(config, i, config.ropeLayers[i] || none === null ? rotary : none, none, mlpOf(i))),
      finalNorm: decoderNorm(config, 'model.norm'),
      lmHead: new LmHead('lm_head.weight', embedding, config.tieWordEmbeddings),
    }, stage);
  }

  override get tapsLayerInputs(): boolean {
    return true;
  }

  protected layerForward(b: Backend, layer: DecoderLayer, stream: ResidualStream, step: StepInputs, cache: KvCache): Tensor {
    return preNormLayerForward(b, layer, stream, step, cache, this.config.multipliers?.residual ?? 1);
  }

  protected override finalLogits(b: Backend, step: StepInputs, stream: ResidualStream, tap: HiddenStateTap | undefined): Tensor {
    const logits = super.finalLogits(b, step, stream, tap);
    if (this.config.multipliers !== null) b.scale(logits, 1 / this.config.multipliers.logits);
    return logits;
  }

  earlyExit(numLayers: number): CausalLM {
    return this.earlyExitAfter(numLayers);
  }
}
