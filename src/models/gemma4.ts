import type { Backend, KvCache, StepInputs, Tensor } from '../backend/backend.ts';
import { invalidArgument } from '../errors.ts';
import { LmHead, VocabEmbedding } from '../layers/embedding.ts';
import { GatedMlp } from '../layers/gated-mlp.ts';
import { RmsNorm } from '../layers/norm.ts';
import { ComposedLayer, type Layer, type ParameterSpec, type WeightSource, type WeightUploader } from '../layers/parameters.ts';
import { RotaryEmbedding } from '../layers/rotary.ts';
import type { StreamingWindow } from '../step/kv-cache-layout.ts';
import type { HiddenStateTap, ModelFamily } from './causal-lm.ts';
import { DecoderStack, type ResidualStream } from './decoder-stack.ts';
import { parseGemma4Config, type Gemma4Config } from './gemma4-config.ts';
import { Gemma4Attention, Gemma4Experts, LayerScalar, PerLayerInputGate, PerLayerInputs, type StepKeysValues } from './gemma4-layers.ts';
import { isFirstStage, type PipelineStage } from './pipeline-stage.ts';

/*
 * Gemma 4 (transformers' Gemma4ForCausalLM, and the language model of Gemma4ForConditionalGeneration):
 * Gemma 3's layer (sandwich norms, GeGLU, embeddings times √hidden, tied LM head, sliding and full
 * layers with a RoPE each), with plain x · w RMSNorms, q/k/v norms and unscaled scores, full layers
 * of their own head dim and kv heads, optionally keys as values (attention_k_eq_v), KV-shared last
 * layers, per-layer input embeddings, a mixture of experts beside the dense MLP, and each layer's
 * output times its layer_scalar.
 */

class Gemma4DecoderLayer extends ComposedLayer {
  readonly inputNorm: RmsNorm;
  readonly attention: Gemma4Attention;
  readonly postAttentionNorm: RmsNorm;
  readonly preFeedforwardNorm: RmsNorm;
  readonly mlp: GatedMlp;
  /** With experts: the norms of the dense MLP's and the experts' outputs before they are summed. */
  readonly experts: { block: Gemma4Experts; mlpOutputNorm: RmsNorm; outputNorm: RmsNorm } | null;
  readonly postFeedforwardNorm: RmsNorm;
  readonly perLayerInput: PerLayerInputGate | null;
  readonly scalar: LayerScalar;

  constructor(config: Gemma4Config, index: number, rotary: { sliding: RotaryEmbedding; full: RotaryEmbedding }, earlier: readonly Gemma4DecoderLayer[]) {
    super();
    const p = `model.layers.${index}`;
    const norm = (name: string) => new RmsNorm(`${p}.${name}.weight`, config.hiddenSize, config.rmsNormEps);
    const layer = config.layers[index];
    this.inputNorm = norm('input_layernorm');
    const source = layer.kvSource === null ? null : earlier[layer.kvSource].attention;
    this.attention = new Gemma4Attention(config, index, layer.sliding ? rotary.sliding : rotary.full, source);
    this.postAttentionNorm = norm('post_attention_layernorm');
    this.preFeedforwardNorm = norm('pre_feedforward_layernorm');
    this.mlp = new GatedMlp(
      { gate: `${p}.mlp.gate_proj.weight`, up: `${p}.mlp.up_proj.weight`, down: `${p}.mlp.down_proj.weight` },
      config.hiddenSize,
      layer.intermediateSize,
      config.activation,
    );
    this.experts =
      config.moe === null ? null : { block: new Gemma4Experts(config, index), mlpOutputNorm: norm('post_feedforward_layernorm_1'), outputNorm: norm('post_feedforward_layernorm_2') };
    this.postFeedforwardNorm = norm('post_feedforward_layernorm');
    this.perLayerInput = config.perLayerInput === null ? null : new PerLayerInputGate(config, index);
    this.scalar = new LayerScalar(index);
  }

  protected get sublayers(): Layer[] {
    const experts = this.experts === null ? [] : [this.experts.mlpOutputNorm, this.experts.block, this.experts.outputNorm];
    return [
      this.inputNorm,
      this.attention,
      this.postAttentionNorm,
      this.preFeedforwardNorm,
      this.mlp,
      ...experts,
      this.postFeedforwardNorm,
      ...(this.perLayerInput === null ? [] : [this.perLayerInput]),
      this.scalar,
    ];
  }
}

/** What one forward's layers share beyond the residual stream, computed at its first layer. */
interface ForwardState {
  /** Each layer's per-layer input (PLE), or null without PLE. */
  perLayerInputs: Tensor[] | null;
  keysValues: StepKeysValues;
}

export class Gemma4Model extends DecoderStack<Gemma4Config, Gemma4DecoderLayer> {
  private readonly perLayerInputs: PerLayerInputs | null;
  /**
   * The current forward's shared state, set as the stage's first layer runs: the per-layer inputs
   * computed from the token embeddings the residual stream holds then (first stage), or received
   * from the stage before (`receiveHandoff`).
   */
  private forwardState: ForwardState | null = null;
  /** On a later pipeline stage, the per-layer inputs the stage before sent for this forward, by layer. */
  private receivedInputs: Tensor[] | null = null;

  constructor(config: Gemma4Config, maxPositions: number, streaming: StreamingWindow | null, stage: PipelineStage) {
    // A KV-shared layer reads its source layer's cache, which must be on its device.
    const straddling = config.layers.findIndex((l, i) => l.kvSource !== null && i >= stage.firstLayer && i < stage.endLayer && l.kvSource < stage.firstLayer);
    if (straddling >= 0) {
      throw invalidArgument(
        `pipeline stage ${stage.index} holds layer ${straddling}, which reads the keys and values of layer ${config.layers[straddling].kvSource} on an earlier stage: ` +
          "Gemma 4's KV-shared layers run on their source layer's stage (use fewer pipeline stages)",
      );
    }
    const rotary = (headDim: number, rope: Gemma4Config['fullRope']) =>
      new RotaryEmbedding({ rotaryDim: headDim, theta: rope.ropeTheta, scaling: rope.ropeScaling, maxPositionEmbeddings: config.maxPositionEmbeddings }, maxPositions, streaming);
    const headDimOf = (sliding: boolean) => config.layers.find((l) => l.sliding === sliding)?.headDim;
    const [slidingDim, fullDim] = [headDimOf(true), headDimOf(false)!];
    const full = rotary(fullDim, config.fullRope);
    const sliding = slidingDim === undefined ? full : rotary(slidingDim, config.slidingRope);
    const embedding = new VocabEmbedding('model.embed_tokens.weight', config.vocabSize, config.hiddenSize, Math.fround(Math.sqrt(config.hiddenSize)));
    const layers: Gemma4DecoderLayer[] = [];
    for (let i = 0; i < config.numLayers; i++) layers.push(new Gemma4DecoderLayer(config, i, { sliding, full }, layers));
    // Computed on the first stage, which sends the later stages theirs.
    const perLayerInputs = config.perLayerInput === null || !isFirstStage(stage) ? null : new PerLayerInputs(config);
    super(
      config,
      {
        rotaries: sliding === full ? [full] : [sliding, full],
        embedding,
        layers,
        finalNorm: new RmsNorm('model.norm.weight', config.hiddenSize, config.rmsNormEps),
        lmHead: new LmHead('lm_head.weight', embedding, config.tieWordEmbeddings),
        finalLogitSoftcap: config.finalLogitSoftcap,
      },
      stage,
    );
    this.perLayerInputs = perLayerInputs;
  }

  override parameters(): ParameterSpec[] {
    return [...super.parameters(), ...(this.perLayerInputs?.parameters() ?? [])];
  }

  override load(source: WeightSource, uploader: WeightUploader): void {
    super.load(source, uploader);
    this.perLayerInputs?.load(source, uploader);
  }

  /**
   * h += post_attention_norm(attn(input_norm(h))); h += post_feedforward_norm(mlp(pre_feedforward_norm(h))
   * [+ the experts' output]); with PLE, h += its per-layer input gate's output; h *= layer_scalar.
   * The last output added is left pending for the next norm, as Gemma 3's.
   */
  protected layerForward(b: Backend, layer: Gemma4DecoderLayer, stream: ResidualStream, step: StepInputs, cache: KvCache): Tensor {
    const { residual, pending } = stream;
    const index = layer.attention.layer;
    if (index === this.stage.firstLayer) {
      // On the first stage the residual stream holds the token embeddings until the first norm adds to it.
      const inputs = isFirstStage(this.stage) ? (this.perLayerInputs?.forward(b, residual, step) ?? null) : this.receivedInputs;
      this.forwardState = { perLayerInputs: inputs, keysValues: new Map() };
    }
    const state = this.forwardState!;
    const attnIn = pending === null ? layer.inputNorm.forward(b, residual) : layer.inputNorm.addAndForward(b, pending, residual);
    const attnOut = layer.postAttentionNorm.forward(b, layer.attention.forward(b, attnIn, step, cache, state.keysValues));
    let ffOut = layer.mlp.forward(b, layer.preFeedforwardNorm.addAndForward(b, attnOut, residual), step);
    if (layer.experts !== null) {
      const { block, mlpOutputNorm, outputNorm } = layer.experts;
      ffOut = mlpOutputNorm.forward(b, ffOut);
      b.addInto(ffOut, outputNorm.forward(b, block.forward(b, residual)), null);
    }
    let out = layer.postFeedforwardNorm.forward(b, ffOut);
    if (layer.perLayerInput !== null) {
      b.addInto(residual, out, null);
      out = layer.perLayerInput.forward(b, residual, state.perLayerInputs![index]);
    }
    const scalar = layer.scalar.value;
    // (residual + out) · s, with out still pending.
    if (scalar !== 1) {
      b.scale(residual, scalar);
      b.scale(out, scalar);
    }
    return out;
  }

  /** The per-layer inputs of the layers after this stage's, sent after the residual stream. */
  protected override stageHandoff(_step: StepInputs): (b: Backend) => void {
    const inputs = this.forwardState?.perLayerInputs ?? null;
    const next = this.stage.index + 1;
    return (b) => {
      if (inputs !== null) for (let i = this.stage.endLayer; i < this.config.numLayers; i++) b.sendToStage(inputs[i], next);
    };
  }

  protected override receiveHandoff(b: Backend, step: StepInputs): void {
    const width = this.config.perLayerInput?.hiddenSize;
    if (width === undefined) return;
    const inputs: Tensor[] = [];
    for (let i = this.stage.firstLayer; i < this.config.numLayers; i++) inputs[i] = b.receiveFromStage([step.batch.numTokens, width], this.stage.index - 1);
    this.receivedInputs = inputs;
  }

  protected override finalLogits(b: Backend, step: StepInputs, stream: ResidualStream, tap: HiddenStateTap | undefined): Tensor {
    this.forwardState = null;
    return super.finalLogits(b, step, stream, tap);
  }
}

export const gemma4Family: ModelFamily<Gemma4Config> = {
  name: 'Gemma 4',
  modelTypes: ['gemma4_text'],
  parseConfig: parseGemma4Config,
  create: (config, maxPositions, streaming, stage) => new Gemma4Model(config, maxPositions, streaming, stage),
};
