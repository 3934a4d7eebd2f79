import type { Backend, KvCache, StepInputs, Tensor } from '../backend/backend.ts';
import type { Checkpoint } from '../checkpoint/checkpoint.ts';
import { invalidModel } from '../errors.ts';
import type { VocabEmbedding } from '../layers/embedding.ts';
import { Linear } from '../layers/linear.ts';
import { RmsNorm } from '../layers/norm.ts';
import { ComposedLayer, type Layer } from '../layers/parameters.ts';
import type { RotaryEmbedding } from '../layers/rotary.ts';
import type { LayerKvSpec } from '../step/kv-cache-layout.ts';
import type { PreNormLayer } from './pre-norm-layer.ts';
import type { DraftHead, TargetStates } from './draft-head.ts';
import type { ModelConfig } from './model-config.ts';

/** A family's decoder layer as an MTP module's block: a pre-norm layer whose attention declares its KV spec. */
export type MtpBlock = Layer & PreNormLayer & { attention: { kvSpec: LayerKvSpec } };

/**
 * What a family gives the MTP head (ModelFamily.mtp): how many MTP layers its config declares
 * (`num_nextn_predict_layers`), their norms' epsilon, and the block of one.
 */
export interface MtpLayers {
  count: number;
  rmsNormEps: number;
  /**
   * Checkpoint layer `index`'s decoder block, built as the family builds its own layers (the MoE
   * feed-forward, its attention's options), keeping its K/V in layer 0 of the head's cache, with
   * the rotary table it reads (covering `maxPositions`).
   */
  block(index: number, maxPositions: number): { rotary: RotaryEmbedding; block: MtpBlock };
}

/**
 * A multi-token prediction module (the first of `num_nextn_predict_layers`, stored in the target's
 * checkpoint as layer num_hidden_layers), as DeepSeek-V3 and Z.ai's GLM-4.5 to GLM-5 ship it: at
 * position p, x = eh_proj([enorm(embed(token after p)), hnorm(feature)]) (eh_proj [H, 2H]), one
 * decoder layer of the target's family over x (DeepSeek's MLA and MoE block, GLM-4.5's GQA and MoE
 * block, GLM-5's with its indexer), logits = shared_head.head(shared_head.norm(h)); h is the next
 * feature, the target's is its final norm's output. The embedding is the target's: the checkpoints'
 * copy under the layer (`embed_tokens`) is not read, as vLLM and SGLang share the target's. With K
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
  private readonly block: MtpBlock;
  private readonly sharedNorm: RmsNorm;
  private readonly sharedHead: Linear;

  private constructor(config: ModelConfig, layers: MtpLayers, embedding: VocabEmbedding, maxPositions: number) {
    super();
    const h = config.hiddenSize;
    const eps = layers.rmsNormEps;
    const p = `model.layers.${config.numLayers}`;
    const { rotary, block } = layers.block(config.numLayers, maxPositions);
    this.featureWidth = h;
    this.embedding = embedding;
    this.rotary = rotary;
    this.block = block;
    this.enorm = new RmsNorm(`${p}.enorm.weight`, h, eps);
    this.hnorm = new RmsNorm(`${p}.hnorm.weight`, h, eps);
    this.ehProj = Linear.single(`${p}.eh_proj.weight`, h, 2 * h, 'replicated');
    this.sharedNorm = new RmsNorm(`${p}.shared_head.norm.weight`, h, eps);
    this.sharedHead = new Linear({ parts: [{ name: `${p}.shared_head.head.weight`, rows: config.vocabSize }], inFeatures: h, bias: false, shard: 'column', dense: true });
  }

  /**
   * The MTP module of a target, from the target's config, its family's MTP layers and its
   * checkpoint (null with random weights: the tensors are made, not read): refused when it
   * carries none.
   */
  static forTarget(config: ModelConfig, layers: MtpLayers, embedding: VocabEmbedding, ckpt: Checkpoint | null, maxPositions: number): MtpHead {
    if (layers.count < 1) {
      throw invalidModel(`the target (model_type ${config.modelType}) carries no multi-token prediction layers (num_nextn_predict_layers is ${layers.count}): --speculative-method mtp needs a checkpoint with them`);
    }
    const head = new MtpHead(config, layers, embedding, maxPositions);
    const missing = ckpt === null ? undefined : head.parameters().find((spec) => !ckpt.has(spec.name));
    if (missing !== undefined) throw invalidModel(`${ckpt!.dir}: config.json declares ${layers.count} MTP layers, but the checkpoint has no ${missing.name}`);
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
