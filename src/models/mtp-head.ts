import type { Backend, KvCache, StepInputs, Tensor } from '../backend/backend.ts';
import type { Checkpoint } from '../checkpoint/checkpoint.ts';
import { invalidModel } from '../errors.ts';
import type { LmHead, VocabEmbedding } from '../layers/embedding.ts';
import { Linear } from '../layers/linear.ts';
import { RmsNorm } from '../layers/norm.ts';
import { ComposedLayer, type Layer } from '../layers/parameters.ts';
import type { RotaryEmbedding } from '../layers/rotary.ts';
import type { LayerKvSpec } from '../step/kv-cache-layout.ts';
import type { PreNormLayer } from './pre-norm-layer.ts';
import type { DraftHead, TargetLayers, TargetStates } from './draft-head.ts';
import type { ModelConfig } from './model-config.ts';

/**
 * Where a checkpoint keeps an MTP module's own tensors around its block, and what its output is:
 * - `shared-head` (DeepSeek-V3, GLM): under layer num_hidden_layers's prefix, `enorm`, `hnorm`,
 *   `eh_proj` and `shared_head.{norm,head}`: logits = shared_head.head(shared_head.norm(h)), and
 *   the block's output h itself is the next feature;
 * - `target-head` (Qwen3-Next, Qwen3.5): under `mtp.`, `pre_fc_norm_embedding`,
 *   `pre_fc_norm_hidden`, `fc` and `norm`, RMSNorms of (1 + w) as the family's: the normed output
 *   norm(h) is the next feature and gives logits through the target's LM head (vLLM's and
 *   SGLang's Qwen3-Next MTP read it so; the checkpoints hold no head of the module's own).
 */
export interface MtpLayout {
  kind: 'shared-head' | 'target-head';
  prefix: string;
}

/** A family's decoder layer as an MTP module's block: a pre-norm layer whose attention declares its KV spec. */
export type MtpBlock = Layer & PreNormLayer & { attention: { kvSpec: LayerKvSpec } };

/**
 * What a family gives the MTP head (ModelFamily.mtp): how many MTP layers its config declares
 * (under `countKey`), where their tensors are, their norms' epsilon, and the block of the first.
 */
export interface MtpLayers {
  count: number;
  /** The config.json key that declares `count` (`num_nextn_predict_layers`, `mtp_num_hidden_layers`): for messages. */
  countKey: string;
  layout: MtpLayout;
  rmsNormEps: number;
  /**
   * The first MTP layer's decoder block, built as the family builds its own layers (the MoE
   * feed-forward, its attention's options) under the checkpoint's names for it, keeping its K/V
   * in layer 0 of the head's cache, with the rotary table it reads (covering `maxPositions`).
   */
  block(maxPositions: number): { rotary: RotaryEmbedding; block: MtpBlock };
}

/**
 * A multi-token prediction module (the first of the config's MTP layers, stored in the target's
 * checkpoint), as DeepSeek-V3, Z.ai's GLM-4.5 to GLM-5, Qwen3-Next and Qwen3.5 ship it: at
 * position p, x = proj([norm_e(embed(token after p)), norm_h(feature)]) (proj [H, 2H], the
 * embedding first), one decoder layer of the target's family over x (DeepSeek's MLA and MoE
 * block, GLM-4.5's GQA and MoE block, GLM-5's with its indexer, Qwen's gated attention with its
 * dense MLP or MoE block), then the output norm and an LM head (`MtpLayout`: the module's own
 * head, or the target's). The embedding is the target's: DeepSeek's checkpoints' copy under the
 * layer (`embed_tokens`) is not read, as vLLM and SGLang share the target's. With K drafts the
 * one module runs K times; the target's feature is its final norm's output.
 */
export class MtpHead extends ComposedLayer implements DraftHead {
  readonly name = 'MTP';
  readonly featureWidth: number;
  readonly targetStates: TargetStates = { kind: 'final' };
  readonly draftToTarget = null;
  private readonly embedding: VocabEmbedding;
  private readonly rotary: RotaryEmbedding;
  private readonly embeddingNorm: RmsNorm;
  private readonly hiddenNorm: RmsNorm;
  private readonly projection: Linear;
  private readonly block: MtpBlock;
  private readonly outputNorm: RmsNorm;
  /** DeepSeek's shared_head.head; null where the target's LM head gives the logits. */
  private readonly ownHead: Linear | null;
  private readonly targetHead: LmHead;

  private constructor(config: ModelConfig, layers: MtpLayers, target: TargetLayers, maxPositions: number) {
    super();
    const h = config.hiddenSize;
    const eps = layers.rmsNormEps;
    const { kind, prefix: p } = layers.layout;
    const { rotary, block } = layers.block(maxPositions);
    const norm = (name: string) => new RmsNorm(`${p}.${name}.weight`, h, eps, { offset: kind === 'target-head' ? 1 : 0 });
    this.featureWidth = h;
    this.embedding = target.embedding;
    this.targetHead = target.lmHead;
    this.rotary = rotary;
    this.block = block;
    this.embeddingNorm = norm(kind === 'shared-head' ? 'enorm' : 'pre_fc_norm_embedding');
    this.hiddenNorm = norm(kind === 'shared-head' ? 'hnorm' : 'pre_fc_norm_hidden');
    this.projection = Linear.single(`${p}.${kind === 'shared-head' ? 'eh_proj' : 'fc'}.weight`, h, 2 * h, 'replicated');
    this.outputNorm = norm(kind === 'shared-head' ? 'shared_head.norm' : 'norm');
    this.ownHead = kind === 'shared-head' ? new Linear({ parts: [{ name: `${p}.shared_head.head.weight`, rows: config.vocabSize }], inFeatures: h, bias: false, shard: 'column', dense: true }) : null;
  }

  /**
   * The MTP module of a target, from the target's config, its family's MTP layers, the layers it
   * shares with the target and its checkpoint (null with random weights: the tensors are made,
   * not read): refused when it carries none.
   */
  static forTarget(config: ModelConfig, layers: MtpLayers, target: TargetLayers, ckpt: Checkpoint | null, maxPositions: number): MtpHead {
    if (layers.count < 1) {
      throw invalidModel(`the target (model_type ${config.modelType}) carries no multi-token prediction layers (${layers.countKey} is ${layers.count}): --speculative-method mtp needs a checkpoint with them`);
    }
    const head = new MtpHead(config, layers, target, maxPositions);
    const missing = ckpt === null ? undefined : head.parameters().find((spec) => !ckpt.has(spec.name));
    if (missing !== undefined) throw invalidModel(`${ckpt!.dir}: config.json declares ${layers.count} MTP layers (${layers.countKey}), but the checkpoint has no ${missing.name}`);
    return head;
  }

  get kvLayer(): LayerKvSpec {
    return this.block.attention.kvSpec;
  }

  protected get sublayers(): Layer[] {
    const layers: Layer[] = [this.rotary, this.embeddingNorm, this.hiddenNorm, this.projection, this.block, this.outputNorm];
    if (this.ownHead !== null) layers.push(this.ownHead);
    return layers;
  }

  features(_b: Backend, states: readonly Tensor[]): Tensor {
    return states[0];
  }

  forward(b: Backend, step: StepInputs, cache: KvCache, features: Tensor): { hidden: Tensor; logits: Tensor } {
    const embeds = this.embeddingNorm.forward(b, this.embedding.forward(b, step));
    const stream = this.projection.forward(b, b.concatColumns([embeds, this.hiddenNorm.forward(b, features)]));
    const { block } = this;
    const attnOut = block.attention.forward(b, block.inputNorm.forward(b, stream), step, cache);
    const mlpOut = block.mlp.forward(b, block.postAttentionNorm.addAndForward(b, attnOut, stream), step);
    b.addInto(stream, mlpOut, null);
    const output = b.gatherLogitsRows(stream, step);
    const normed = this.outputNorm.forward(b, output);
    if (this.ownHead !== null) return { hidden: output, logits: this.ownHead.forward(b, normed) };
    return { hidden: normed, logits: this.targetHead.forward(b, normed) };
  }
}
