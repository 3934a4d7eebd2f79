import type { Activation, Backend, KvCache, StepInputs, Tensor } from '../backend/backend.ts';
import type { Checkpoint } from '../checkpoint/checkpoint.ts';
import { readIndices } from '../checkpoint/quantization/packed-tensors.ts';
import { invalidModel } from '../errors.ts';
import { projectionNames, SelfAttention } from '../layers/attention.ts';
import { VocabEmbedding, type LmHead } from '../layers/embedding.ts';
import { GatedMlp } from '../layers/gated-mlp.ts';
import { Linear } from '../layers/linear.ts';
import { RmsNorm } from '../layers/norm.ts';
import { ComposedLayer, type Layer } from '../layers/parameters.ts';
import { RotaryEmbedding } from '../layers/rotary.ts';
import type { AttentionKvSpec } from '../step/kv-cache-layout.ts';
import type { DraftHead, TargetLayers, TargetStates } from './draft-head.ts';
import { defaultAuxLayers, type EagleHeadConfig } from './eagle-config.ts';

const SILU: Activation = { kind: 'silu' };

/** What an EAGLE head is checked against and shares. */
export interface EagleTarget extends TargetLayers {
  hiddenSize: number;
  vocabSize: number;
  numLayers: number;
}

/**
 * An EAGLE head (Li et al., 2024): one Llama decoder layer over the token after each position and
 * a feature of the position.
 *
 * EAGLE-1/2: x = fc([embed(token), feature]) (fc [H, 2H] with a bias), the layer without its
 * input norm (h = x + attn(x); h += mlp(post_norm(h))), logits = the target's LM head on h, and h
 * is the next feature; the target's feature is its final norm's output.
 *
 * EAGLE-3: the target's feature is fc over the residual states entering three of its layers side
 * by side ([H, 3H_target]); the layer attends over [input_norm(embed(token)), hidden_norm(feature)]
 * (q/k/v [*, 2H]) with the feature as the residual (or its norm, with norm_before_residual), then
 * the MLP as usual; logits = its own LM head over norm(h) on a reduced vocabulary, whose ids map to
 * the target's through `d2t` (target = id + d2t[id]), and h is the next feature.
 *
 * Tensor names: `fc.*`, `norm.weight`, `lm_head.weight`, `d2t`, the layer under `layers.0.`
 * (EAGLE-1, speculators) or `midlayer.` (the EAGLE-3 authors'); `embed_tokens.weight` when the
 * checkpoint carries one, else the target's embedding is shared.
 */
export class EagleHead extends ComposedLayer implements DraftHead {
  readonly name: string;
  readonly config: EagleHeadConfig;
  readonly featureWidth: number;
  readonly targetStates: TargetStates;
  private readonly rotary: RotaryEmbedding;
  private readonly embedding: VocabEmbedding;
  private readonly ownEmbedding: boolean;
  private readonly fc: Linear;
  private readonly inputNorm: RmsNorm | null;
  private readonly hiddenNorm: RmsNorm | null;
  private readonly attention: SelfAttention;
  private readonly postAttentionNorm: RmsNorm;
  private readonly mlp: GatedMlp;
  private readonly norm: RmsNorm | null;
  private readonly lmHead: Linear | LmHead;
  private readonly ownLmHead: Linear | null;
  private d2t: Int32Array | null = null;

  private constructor(config: EagleHeadConfig, target: EagleTarget, prefix: string, options: { fcBias: boolean; ownEmbedding: boolean; maxPositions: number }) {
    super();
    const { layer } = config;
    const eagle3 = config.version === 3;
    const h = layer.hiddenSize;
    this.name = eagle3 ? 'EAGLE-3' : 'EAGLE';
    this.config = config;
    this.featureWidth = h;
    this.targetStates = eagle3 ? { kind: 'layerInputs', layers: config.auxLayers ?? defaultAuxLayers(target.numLayers) } : { kind: 'final' };
    const eps = layer.rmsNormEps;
    this.rotary = new RotaryEmbedding({ rotaryDim: layer.rotaryDim, theta: layer.ropeTheta, scaling: layer.ropeScaling, maxPositionEmbeddings: layer.maxPositionEmbeddings }, options.maxPositions);
    this.ownEmbedding = options.ownEmbedding;
    this.embedding = options.ownEmbedding ? new VocabEmbedding('embed_tokens.weight', target.vocabSize, h) : target.embedding;
    this.fc = Linear.single('fc.weight', h, eagle3 ? 3 * config.targetHiddenSize : 2 * h, 'replicated', options.fcBias);
    this.inputNorm = eagle3 ? new RmsNorm(`${prefix}input_layernorm.weight`, h, eps) : null;
    this.hiddenNorm = eagle3 ? new RmsNorm(`${prefix}hidden_norm.weight`, h, eps) : null;
    this.attention = new SelfAttention({
      layer: 0,
      hiddenSize: h,
      inputSize: eagle3 ? 2 * h : h,
      numHeads: layer.numHeads,
      numKvHeads: layer.numKvHeads,
      headDim: layer.headDim,
      scale: layer.headDim ** -0.5,
      slidingWindow: null,
      softcap: null,
      sinks: null,
      rotary: this.rotary,
      qkNorm: null,
      ...projectionNames(`${prefix}self_attn`),
      qkvBias: layer.attentionBias,
      oBias: layer.outputBias,
    });
    this.postAttentionNorm = new RmsNorm(`${prefix}post_attention_layernorm.weight`, h, eps);
    this.mlp = new GatedMlp({ gate: `${prefix}mlp.gate_proj.weight`, up: `${prefix}mlp.up_proj.weight`, down: `${prefix}mlp.down_proj.weight` }, h, layer.intermediateSize, SILU);
    this.norm = eagle3 ? new RmsNorm('norm.weight', h, eps) : null;
    this.ownLmHead = eagle3 ? new Linear({ parts: [{ name: 'lm_head.weight', rows: config.draftVocabSize }], inFeatures: h, bias: false, shard: 'column', dense: true }) : null;
    this.lmHead = this.ownLmHead ?? target.lmHead;
  }

  /**
   * The head a checkpoint holds, checked against the target before anything is read: its hidden
   * size (EAGLE shares the target's embedding and LM head; EAGLE-3's fc reads the target's
   * states), its vocabulary, the target layers EAGLE-3 reads, and the tensors its format names.
   * Without a checkpoint (random weights) the tensors are named as its format names them.
   */
  static forCheckpoint(config: EagleHeadConfig, ckpt: Checkpoint | null, target: EagleTarget, maxPositions: number): EagleHead {
    const what = `${ckpt?.dir ?? 'the'} ${config.version === 3 ? 'EAGLE-3' : 'EAGLE'} head`;
    const { layer } = config;
    if (layer.vocabSize !== target.vocabSize) throw invalidModel(`${what} was made for a vocabulary of ${layer.vocabSize} tokens, the target has ${target.vocabSize}`);
    const needed = config.version === 3 ? config.targetHiddenSize : layer.hiddenSize;
    if (needed !== target.hiddenSize) throw invalidModel(`${what} reads hidden states of ${needed}, the target's are ${target.hiddenSize}: it was trained for another model`);
    if (config.version === 3) {
      const aux = config.auxLayers ?? defaultAuxLayers(target.numLayers);
      const bad = aux.find((i) => !(i >= 0 && i < target.numLayers));
      if (bad !== undefined) throw invalidModel(`${what} reads the input of target layer ${bad}, but the target has ${target.numLayers} layers (eagle_aux_hidden_state_layer_ids ${JSON.stringify(config.auxLayers)}, default 2, L/2, L-3)`);
    }
    if (ckpt === null) {
      const prefix = config.version === 3 && !config.speculators ? 'midlayer.' : 'layers.0.';
      return new EagleHead(config, target, prefix, { fcBias: config.version === 1, ownEmbedding: false, maxPositions });
    }
    const prefix = ckpt.has('midlayer.self_attn.q_proj.weight') ? 'midlayer.' : 'layers.0.';
    for (const name of ['fc.weight', `${prefix}self_attn.q_proj.weight`, ...(config.version === 3 ? ['lm_head.weight'] : [])]) {
      if (!ckpt.has(name)) throw invalidModel(`${what} has no tensor ${name}; it holds ${ckpt.tensorNames.slice(0, 8).join(', ')}…`);
    }
    const [fcRows, fcCols] = ckpt.info('fc.weight').shape;
    const fcIn = config.version === 3 ? 3 * target.hiddenSize : 2 * layer.hiddenSize;
    if (fcRows !== layer.hiddenSize || fcCols !== fcIn) throw invalidModel(`${what}: fc.weight is [${fcRows}, ${fcCols}], expected [${layer.hiddenSize}, ${fcIn}]`);
    if (config.version === 3 && config.draftVocabSize !== target.vocabSize && !ckpt.has('d2t')) {
      throw invalidModel(`${what} has a draft vocabulary of ${config.draftVocabSize} but no d2t tensor mapping it to the target's`);
    }
    const ownEmbedding = ckpt.has('embed_tokens.weight');
    if (ownEmbedding) {
      const [rows, cols] = ckpt.info('embed_tokens.weight').shape;
      if (rows !== target.vocabSize || cols !== layer.hiddenSize) throw invalidModel(`${what}: embed_tokens.weight is [${rows}, ${cols}], expected [${target.vocabSize}, ${layer.hiddenSize}]`);
    }
    return new EagleHead(config, target, prefix, { fcBias: ckpt.has('fc.bias'), ownEmbedding, maxPositions });
  }

  get kvLayer(): AttentionKvSpec {
    return this.attention.kvSpec;
  }

  get draftToTarget(): Int32Array | null {
    return this.d2t;
  }

  protected get sublayers(): Layer[] {
    const layers: (Layer | null)[] = [this.rotary, this.ownEmbedding ? this.embedding : null, this.fc, this.inputNorm, this.hiddenNorm];
    layers.push(this.attention, this.postAttentionNorm, this.mlp, this.norm, this.ownLmHead);
    return layers.filter((l): l is Layer => l !== null);
  }

  /**
   * EAGLE-3's map of its vocabulary to the target's (`d2t`, the offset of each draft id), read
   * from the checkpoint; without one (random weights), draft id i is target id i.
   */
  readVocabularyMap(ckpt: Checkpoint | null): void {
    if (this.config.version !== 3 || this.config.draftVocabSize === this.config.layer.vocabSize) return;
    const size = this.config.draftVocabSize;
    const offsets = ckpt === null ? null : readIndices(ckpt, 'd2t');
    if (offsets !== null && (offsets.shape.length !== 1 || offsets.shape[0] !== size)) throw invalidModel(`${ckpt!.dir}: d2t has shape [${offsets.shape.join(', ')}], expected [${size}]`);
    this.d2t = Int32Array.from({ length: size }, (_, i) => i + (offsets?.values[i] ?? 0));
    const vocab = this.config.layer.vocabSize;
    const bad = this.d2t.findIndex((id) => !(id >= 0 && id < vocab));
    if (bad >= 0) throw invalidModel(`${ckpt!.dir}: d2t maps draft token ${bad} to ${this.d2t[bad]}, outside the target's ${vocab} tokens`);
  }

  features(b: Backend, states: readonly Tensor[]): Tensor {
    return this.config.version === 3 ? this.fc.forward(b, b.concatColumns(states)) : states[0];
  }

  forward(b: Backend, step: StepInputs, cache: KvCache, features: Tensor): { hidden: Tensor; logits: Tensor } {
    const embeds = this.embedding.forward(b, step);
    let residual: Tensor;
    let attnIn: Tensor;
    if (this.config.version === 3) {
      const normed = this.hiddenNorm!.forward(b, features);
      residual = this.config.normBeforeResidual ? normed : features;
      attnIn = b.concatColumns([this.inputNorm!.forward(b, embeds), normed]);
    } else {
      residual = this.fc.forward(b, b.concatColumns([embeds, features]));
      attnIn = residual;
    }
    const stream = residual;
    const attnOut = this.attention.forward(b, attnIn, step, cache);
    const mlpOut = this.mlp.forward(b, this.postAttentionNorm.addAndForward(b, attnOut, stream), step);
    b.addInto(stream, mlpOut, null);
    const hidden = b.gatherLogitsRows(stream, step);
    const logits = this.lmHead.forward(b, this.norm === null ? hidden : this.norm.forward(b, hidden));
    return { hidden, logits };
  }
}
