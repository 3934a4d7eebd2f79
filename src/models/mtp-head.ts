import type { Backend, KvCache, StepInputs, Tensor } from '../backend/backend.ts';
import type { Checkpoint } from '../checkpoint/checkpoint.ts';
import { invalidModel } from '../errors.ts';
import type { VocabEmbedding } from '../layers/embedding.ts';
import { Linear } from '../layers/linear.ts';
import { RmsNorm } from '../layers/norm.ts';
import { ComposedLayer, type Layer } from '../layers/parameters.ts';
import { RotaryEmbedding } from '../layers/rotary.ts';
import type { LayerKvSpec } from '../step/kv-cache-layout.ts';
import { DeepseekDecoderLayer, type DeepseekConfig } from './deepseek.ts';
import type { DraftHead, TargetStates } from './draft-head.ts';

/**
 * DeepSeek-V3's multi-token prediction module (the first of `num_nextn_predict_layers`, stored in
 * the target's checkpoint as layer num_hidden_layers): at position p, x = eh_proj([enorm(embed(token
 * after p)), hnorm(feature)]) (eh_proj [H, 2H]), one DeepSeek decoder layer over x (MLA and the
 * MoE block), logits = shared_head.head(shared_head.norm(h)); h is the next feature, the target's
 * is its final norm's output. The embedding is the target's (DeepSeek-V3 shares it). With K
 * drafts the one module runs K times.
 */
export class MtpHead extends ComposedLayer implements DraftHead {
  readonly name = 'MTP';
  readonly featureWidth: number;
  readonly targetStates: TargetStates = { kind: 'final' };
  readonly draftToTarget = null;
  private readonly embedding: VocabEmbedding;
  private readonly rotary: RotaryEmbedding;
  private readonly enorm: RmsNorm;
  private readonly hnorm: RmsNorm;
  private readonly ehProj: Linear;
  private readonly block: DeepseekDecoderLayer;
  private readonly sharedNorm: RmsNorm;
  private readonly sharedHead: Linear;

  private constructor(config: DeepseekConfig, embedding: VocabEmbedding, maxPositions: number) {
    super();
    const h = config.hiddenSize;
    const p = `model.layers.${config.numLayers}`;
    this.featureWidth = h;
    this.embedding = embedding;
    this.rotary = new RotaryEmbedding({ rotaryDim: config.ropeDim, theta: config.ropeTheta, scaling: config.ropeScaling, maxPositionEmbeddings: config.maxPositionEmbeddings }, maxPositions);
    this.enorm = new RmsNorm(`${p}.enorm.weight`, h, config.rmsNormEps);
    this.hnorm = new RmsNorm(`${p}.hnorm.weight`, h, config.rmsNormEps);
    this.ehProj = Linear.single(`${p}.eh_proj.weight`, h, 2 * h, 'replicated');
    this.block = new DeepseekDecoderLayer(config, config.numLayers, this.rotary, 0);
    this.sharedNorm = new RmsNorm(`${p}.shared_head.norm.weight`, h, config.rmsNormEps);
    this.sharedHead = new Linear({ parts: [{ name: `${p}.shared_head.head.weight`, rows: config.vocabSize }], inFeatures: h, bias: false, shard: 'column', dense: true });
  }

  /**
   * The MTP module of a DeepSeek-V3 target, from the target's own config and checkpoint (null
   * with random weights: the tensors are made, not read): refused when it carries none.
   */
  static forTarget(config: DeepseekConfig, embedding: VocabEmbedding, ckpt: Checkpoint | null, maxPositions: number): MtpHead {
    if (config.numNextnPredictLayers < 1) {
      throw invalidModel(`the target (model_type ${config.modelType}) carries no multi-token prediction layers (num_nextn_predict_layers is ${config.numNextnPredictLayers}): --speculative-method mtp needs a checkpoint with them, as DeepSeek-V3's`);
    }
    const head = new MtpHead(config, embedding, maxPositions);
    const missing = ckpt === null ? undefined : head.parameters().find((spec) => !ckpt.has(spec.name));
    if (missing !== undefined) throw invalidModel(`${ckpt!.dir}: config.json declares ${config.numNextnPredictLayers} MTP layers, but the checkpoint has no ${missing.name}`);
    return head;
  }

  get kvLayer(): LayerKvSpec {
    return this.block.attention.kvSpec;
  }

  protected get sublayers(): Layer[] {
    return [this.rotary, this.enorm, this.hnorm, this.ehProj, this.block, this.sharedNorm, this.sharedHead];
  }

  features(_b: Backend, states: readonly Tensor[]): Tensor {
    return states[0];
  }

  forward(b: Backend, step: StepInputs, cache: KvCache, features: Tensor): { hidden: Tensor; logits: Tensor } {
    const embeds = this.enorm.forward(b, this.embedding.forward(b, step));
    const stream = this.ehProj.forward(b, b.concatColumns([embeds, this.hnorm.forward(b, features)]));
    const { block } = this;
    const attnOut = block.attention.forward(b, block.inputNorm.forward(b, stream), step, cache);
    const mlpOut = block.mlp.forward(b, block.postAttentionNorm.addAndForward(b, attnOut, stream), step);
    b.addInto(stream, mlpOut, null);
    const hidden = b.gatherLogitsRows(stream, step);
    return { hidden, logits: this.sharedHead.forward(b, this.sharedNorm.forward(b, hidden)) };
  }
}
