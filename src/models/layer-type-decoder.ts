import type { Backend, KvCache, StepInputs, Tensor } from '../backend/backend.ts';
import type { SelfAttention } from '../layers/attention.ts';
import { LmHead, VocabEmbedding } from '../layers/embedding.ts';
import { RmsNorm } from '../layers/norm.ts';
import { ComposedLayer, type Layer } from '../layers/parameters.ts';
import type { RotaryEmbedding } from '../layers/rotary.ts';
import type { StreamingWindow } from '../step/kv-cache-layout.ts';
import type { CausalLM } from './causal-lm.ts';
import { preNormLayerForward } from './decoder.ts';
import { DecoderStack, type ResidualStream } from './decoder-stack.ts';
import { layerTypeRopeTables, type LayerTypeRope } from './layer-type-rope.ts';
import type { ModelConfig } from './model-config.ts';
import type { PipelineStage } from './pipeline-stage.ts';
import type { FeedForward, PreNormLayer } from './pre-norm-layer.ts';

/** What a decoder of full and sliding layers, each type with its own RoPE, reads of its config. */
export interface LayerTypeDecoderConfig extends ModelConfig {
  rmsNormEps: number;
  maxPositionEmbeddings: number;
  /** Per layer: whether it is a sliding-window layer (`layer_types`). */
  slidingLayers: boolean[];
  /** The RoPE of the full and of the sliding layers (`rope_parameters` per layer type). */
  fullRope: LayerTypeRope;
  slidingRope: LayerTypeRope;
}

/** A pre-norm layer under `model.layers.<index>`: input_layernorm, self_attn, post_attention_layernorm, mlp. */
export class PreNormDecoderLayer extends ComposedLayer implements PreNormLayer {
  readonly inputNorm: RmsNorm;
  readonly attention: SelfAttention;
  readonly postAttentionNorm: RmsNorm;
  readonly mlp: FeedForward;

  constructor(index: number, hiddenSize: number, eps: number, attention: SelfAttention, mlp: FeedForward) {
    super();
    this.attention = attention;
    this.mlp = mlp;
    this.inputNorm = new RmsNorm(`model.layers.${index}.input_layernorm.weight`, hiddenSize, eps);
    this.postAttentionNorm = new RmsNorm(`model.layers.${index}.post_attention_layernorm.weight`, hiddenSize, eps);
  }

  get sublayers(): Layer[] {
    return [this.inputNorm, this.attention, this.postAttentionNorm, this.mlp];
  }
}

/**
 * A pre-norm decoder whose full and sliding layers rotate by RoPE tables of their own (MiMo-V2-Flash,
 * Laguna): the family gives each layer's attention, on the table of its type, and feed-forward.
 */
export class LayerTypeDecoderModel<C extends LayerTypeDecoderConfig> extends DecoderStack<C, PreNormDecoderLayer> {
  constructor(
    config: C,
    maxPositions: number,
    streaming: StreamingWindow | null,
    stage: PipelineStage,
    layer: { attention: (index: number, rotary: RotaryEmbedding) => SelfAttention; mlp: (index: number) => FeedForward },
  ) {
    const { full, sliding } = layerTypeRopeTables(config, maxPositions, streaming);
    const { hiddenSize, rmsNormEps: eps } = config;
    const embedding = new VocabEmbedding('model.embed_tokens.weight', config.vocabSize, hiddenSize);
    super(config, {
      rotaries: [full, sliding],
      embedding,
      layers: Array.from({ length: config.numLayers }, (_, i) => new PreNormDecoderLayer(i, hiddenSize, eps, layer.attention(i, config.slidingLayers[i] ? sliding : full), layer.mlp(i))),
      finalNorm: new RmsNorm('model.norm.weight', hiddenSize, eps),
      lmHead: new LmHead('lm_head.weight', embedding, config.tieWordEmbeddings),
    }, stage);
  }

  override get tapsLayerInputs(): boolean {
    return true;
  }

  protected layerForward(b: Backend, layer: PreNormDecoderLayer, stream: ResidualStream, step: StepInputs, cache: KvCache): Tensor {
    return preNormLayerForward(b, layer, stream, step, cache);
  }

  earlyExit(numLayers: number): CausalLM {
    return this.earlyExitAfter(numLayers);
  }
}
