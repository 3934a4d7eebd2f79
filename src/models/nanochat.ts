import type { Backend, KvCache, StepInputs, Tensor } from '../backend/backend.ts';
import { invalidModel } from '../errors.ts';
import { projectionNames, SelfAttention } from '../layers/attention.ts';
import { LmHead, VocabEmbedding } from '../layers/embedding.ts';
import { GatedMlp } from '../layers/gated-mlp.ts';
import { RmsNorm } from '../layers/norm.ts';
import { ComposedLayer, type Layer, type LoraTarget, type WeightSource, type WeightUploader } from '../layers/parameters.ts';
import { RotaryEmbedding } from '../layers/rotary.ts';
import type { StreamingWindow } from '../step/kv-cache-layout.ts';
import type { ModelFamily } from './causal-lm.ts';
import { decoderRope, parseDecoderFields, preNormLayerForward, type DecoderFields } from './decoder.ts';
import { DecoderStack, type ResidualStream } from './decoder-stack.ts';
import { ConfigFields } from './hf-config.ts';
import type { PipelineStage } from './pipeline-stage.ts';
import type { PreNormLayer } from './pre-norm-layer.ts';

/*
 * Karpathy's nanochat (`nanochat`), as transformers 5.18's NanoChatForCausalLM runs it: Llama's
 * pre-norm layers whose every norm is an RMSNorm without weights (Llama 4's L2 norm), the embedding
 * normed too before the first layer; Qwen3's attention with those weightless norms on q and k after
 * RoPE (a rotation of the whole head keeps its RMS, so they run before it, as Llama 4's, with
 * YaRN's and LongRoPE's attention factor moved from the table into their epsilon) and a
 * rotate_half of its own, (x2, −x1), which rotates by −θ (`reversedRope`); CLIP's MLP, fc1 → relu² →
 * fc2, without a gate; the final logits soft-capped as Gemma 2's (`final_logit_softcapping`).
 */
export interface NanochatConfig extends DecoderFields {
  intermediateSize: number;
  /** q, k, v and o carry a bias (`attention_bias`). */
  attentionBias: boolean;
  /** Final logits become cap · tanh(logit / cap); null for none. */
  finalLogitSoftcap: number | null;
  /**
   * The q/k norms' epsilon as Keel runs them, before RoPE and its attention factor s: transformers
   * norms s · R(x) with rms_norm_eps, which is R(x) normed with rms_norm_eps / s².
   */
  qkNormEps: number;
}

/** NanoChatConfig's defaults for keys a config.json may leave out. */
const DEFAULTS = { maxPositionEmbeddings: 2048, rmsNormEps: 1e-6, intermediateSize: 8192, finalSoftcap: 15 };

function parseNanochatConfig(json: Record<string, unknown>, source: string): NanochatConfig {
  const fields = new ConfigFields(json, source);
  // CLIPMLP applies hidden_act between fc1 and fc2; Keel runs an ungated MLP as relu(u) · u, which is relu².
  const act = fields.string('hidden_act', 'relu2');
  if (act !== 'relu2') throw invalidModel(`${source}: hidden_act "${act}" is not supported for nanochat (Keel runs its MLP without a gate with relu2)`);
  const decoder = parseDecoderFields(fields, { ...DEFAULTS, activation: { kind: 'relu' } });
  // transformers norms q and k after RoPE, which norms away the attention factor YaRN and LongRoPE
  // multiply cos and sin by (but for its share of the epsilon); Keel norms first, then rotates by a
  // table without it.
  const { ropeScaling } = decoder;
  const attentionFactor = 'attentionFactor' in ropeScaling ? ropeScaling.attentionFactor : 1;
  return {
    ...decoder,
    ropeScaling: 'attentionFactor' in ropeScaling ? { ...ropeScaling, attentionFactor: 1 } : ropeScaling,
    qkNormEps: decoder.rmsNormEps / attentionFactor ** 2,
    intermediateSize: fields.positiveInt('intermediate_size', DEFAULTS.intermediateSize),
    attentionBias: fields.boolean('attention_bias', false),
    finalLogitSoftcap: fields.optionalPositiveNumber('final_logit_softcapping', DEFAULTS.finalSoftcap),
  };
}

/** An RMSNorm without weights; `name` names it in errors. */
function weightlessNorm(name: string, config: NanochatConfig, size = config.hiddenSize, eps = config.rmsNormEps): RmsNorm {
  return new RmsNorm(name, size, eps, { weightless: true });
}

/** The token embedding, RMS-normed as it enters the first layer (NanoChatModel norms inputs_embeds). */
class NormedEmbedding extends VocabEmbedding {
  private readonly norm: RmsNorm;

  constructor(config: NanochatConfig) {
    super('model.embed_tokens.weight', config.vocabSize, config.hiddenSize);
    this.norm = weightlessNorm('model.embed_tokens norm', config);
  }

  override load(source: WeightSource, uploader: WeightUploader): void {
    super.load(source, uploader);
    this.norm.load(source, uploader);
  }

  override forward(b: Backend, step: StepInputs): Tensor {
    return this.norm.forward(b, super.forward(b, step));
  }
}

class NanochatLayer extends ComposedLayer implements PreNormLayer {
  readonly inputNorm: RmsNorm;
  readonly attention: SelfAttention;
  readonly postAttentionNorm: RmsNorm;
  readonly mlp: GatedMlp;

  constructor(config: NanochatConfig, index: number, rotary: RotaryEmbedding) {
    super();
    const p = `model.layers.${index}`;
    const { hiddenSize, numHeads, numKvHeads, headDim } = config;
    this.inputNorm = weightlessNorm(`${p}.input_layernorm`, config);
    this.attention = new SelfAttention({
      layer: index,
      hiddenSize,
      numHeads,
      numKvHeads,
      headDim,
      scale: headDim ** -0.5,
      slidingWindow: null,
      softcap: null,
      sinks: null,
      rotary,
      qkNorm: { q: weightlessNorm(`${p}.self_attn.q_norm`, config, headDim, config.qkNormEps), k: weightlessNorm(`${p}.self_attn.k_norm`, config, headDim, config.qkNormEps) },
      ...projectionNames(`${p}.self_attn`),
      qkvBias: config.attentionBias,
      oBias: config.attentionBias,
      reversedRope: true,
    });
    this.postAttentionNorm = weightlessNorm(`${p}.post_attention_layernorm`, config);
    // relu² without a gate: relu(u) · u, fc1 as its own gate.
    this.mlp = new GatedMlp({ up: `${p}.mlp.fc1.weight`, down: `${p}.mlp.fc2.weight` }, hiddenSize, config.intermediateSize, config.activation);
  }

  protected get sublayers(): Layer[] {
    return [this.inputNorm, this.attention, this.postAttentionNorm, this.mlp];
  }

  loraTargets(): LoraTarget[] {
    return [...this.attention.loraTargets(), ...this.mlp.loraTargets()];
  }
}

export class NanochatModel extends DecoderStack<NanochatConfig, NanochatLayer> {
  constructor(config: NanochatConfig, maxPositions: number, streaming: StreamingWindow | null, stage: PipelineStage) {
    const rotary = new RotaryEmbedding(decoderRope(config), maxPositions, streaming);
    const embedding = new NormedEmbedding(config);
    super(config, {
      rotaries: [rotary],
      embedding,
      layers: Array.from({ length: config.numLayers }, (_, i) => new NanochatLayer(config, i, rotary)),
      finalNorm: weightlessNorm('model.norm', config),
      lmHead: new LmHead('lm_head.weight', embedding, config.tieWordEmbeddings),
      finalLogitSoftcap: config.finalLogitSoftcap,
    }, stage);
  }

  override get tapsLayerInputs(): boolean {
    return true;
  }

  protected layerForward(b: Backend, layer: NanochatLayer, stream: ResidualStream, step: StepInputs, cache: KvCache): Tensor {
    return preNormLayerForward(b, layer, stream, step, cache);
  }
}

export const nanochatFamily: ModelFamily<NanochatConfig> = {
  name: 'nanochat',
  modelTypes: ['nanochat'],
  parseConfig: parseNanochatConfig,
  create: (config, maxPositions, streaming, stage) => new NanochatModel(config, maxPositions, streaming, stage),
};
