import type { Backend, KvCache, StepInputs, Tensor, WeightStream } from '../backend/backend.ts';
import type { LmHead, VocabEmbedding } from '../layers/embedding.ts';
import type { ResidualNorm } from '../layers/norm.ts';
import { parametersOf, type Layer, type LoraTarget, type ParameterSpec, type WeightSource, type WeightUploader } from '../layers/parameters.ts';
import type { RotaryEmbedding } from '../layers/rotary.ts';
import type { DecodeSelection, LayerKvSpec, SparseAttention } from '../step/kv-cache-layout.ts';
import type { CausalLM, HiddenStateTap } from './causal-lm.ts';
import { LayerOffload } from './layer-offload.ts';
import type { ModelConfig } from './model-config.ts';
import { isFirstStage, isLastStage, wholeModel, type PipelineStage } from './pipeline-stage.ts';
import { invalidArgument, invalidModel } from '../errors.ts';

/** A decoder layer as the model's bookkeeping sees it: its attention's KV spec and cost. */
export interface StackLayer extends Layer {
  readonly attention: {
    readonly kvSpec: LayerKvSpec;
    readonly macsPerKey: number;
    /** Its sparse decode's choice of positions (CausalLM.decodeSelections); absent or null: dense. */
    readonly decodeSelection?: DecodeSelection | null;
    /** Switches the layer to Quest-style sparse decode attention; absent where it cannot run it (MLA). */
    useSparseAttention?(sparse: SparseAttention): void;
  };
}

/** What a decoder-only model is made of, in the order its parameters are listed and loaded. */
export interface DecoderParts<L extends StackLayer> {
  /** The rotary tables the layers share (one, or Gemma's global and local). */
  rotaries: readonly RotaryEmbedding[];
  embedding: VocabEmbedding;
  layers: readonly L[];
  finalNorm: ResidualNorm;
  lmHead: LmHead;
  /** cap · tanh(logits / cap) on the final logits (Gemma 2's final_logit_softcapping and its heirs); absent or null: none. */
  finalLogitSoftcap?: number | null;
}

/**
 * The residual stream between layers: the residual itself (updated in place by each fused
 * add-and-norm) and the last sublayer's output still to be added to it (null before the first layer).
 */
export interface ResidualStream {
  residual: Tensor;
  pending: Tensor | null;
}

/**
 * A decoder-only model over its parts: lists and loads their parameters, reads each layer's KV
 * spec and attention cost, and runs its pipeline stage (all of it on one stage). A family builds
 * the parts and writes one layer's step of the forward pass.
 *
 * A stage runs from the embedding (first stage) or the residual stream the previous stage sent,
 * through its layers, to the logits (last stage) or the next stage. With several stages the last
 * sends its logits back to the first, where the engine samples (docs/parallelism.md).
 */
export abstract class DecoderStack<C extends ModelConfig, L extends StackLayer> implements CausalLM {
  readonly config: C;
  readonly stage: PipelineStage;
  protected readonly parts: DecoderParts<L>;
  private offload: LayerOffload | null = null;
  /** LongRoPE's table rows and prefix-cache salt (CausalLM.rotaryRow), set where the model's rotary table is LongRoPE. */
  readonly rotaryRow?: (position: number, promptLength: number) => number;
  readonly prefixCacheSalt?: (promptLength: number) => string | null;

  protected constructor(config: C, parts: DecoderParts<L>, stage: PipelineStage) {
    if (stage.firstLayer >= stage.endLayer || stage.endLayer > parts.layers.length) {
      throw new Error(`pipeline stage ${stage.index} holds layers [${stage.firstLayer}, ${stage.endLayer}) of a model of ${parts.layers.length}`);
    }
    this.config = config;
    this.parts = parts;
    this.stage = stage;
    const longrope = parts.rotaries.find((r) => r.config.scaling.type === 'longrope');
    if (longrope !== undefined) {
      // A token's row is chosen per model, not per table: another table (Gemma 3's local RoPE, Llama 4's NoPE layers) has no long-factor rows.
      if (parts.rotaries.length > 1) throw invalidModel(`${config.modelType}: LongRoPE is supported only where every layer shares one rotary embedding`);
      this.rotaryRow = (position, promptLength) => longrope.rotaryRow(position, promptLength);
      this.prefixCacheSalt = (promptLength) => longrope.prefixCacheSalt(promptLength);
    }
  }

  /** The layers this stage runs. */
  private get stageLayers(): readonly L[] {
    return this.parts.layers.slice(this.stage.firstLayer, this.stage.endLayer);
  }

  get kvLayers(): LayerKvSpec[] {
    return this.stageLayers.map((l) => l.attention.kvSpec);
  }

  useSparseAttention(sparse: SparseAttention, denseLayers: readonly number[]): void {
    const numLayers = this.parts.layers.length;
    const outside = denseLayers.find((i) => !(Number.isInteger(i) && i >= 0 && i < numLayers));
    if (outside !== undefined) throw invalidArgument(`sparse attention's dense layer ${outside} is not a layer of this model (it has ${numLayers}: 0 .. ${numLayers - 1})`);
    this.parts.layers.forEach((layer, i) => {
      if (i < this.stage.firstLayer || i >= this.stage.endLayer || denseLayers.includes(i)) return;
      const { attention } = layer;
      // A sliding-window layer reads a few recent blocks already, and a state layer (Gated DeltaNet) none: they stay as they are.
      if (attention.kvSpec.kind === 'attention' && attention.kvSpec.slidingWindow !== null) return;
      if (attention.kvSpec.kind === 'state') return;
      if (attention.useSparseAttention === undefined) {
        throw invalidArgument(`--sparse-attention quest selects blocks by key summaries of attention layers; layer ${i} of this model is ${attention.kvSpec.kind} attention (add it to --sparse-dense-layers, or run dense)`);
      }
      attention.useSparseAttention(sparse);
    });
  }

  get decodeSelections(): (DecodeSelection | null)[] {
    return this.stageLayers.map((l) => l.attention.decodeSelection ?? null);
  }

  get attentionMacsPerKey(): number[] {
    return this.stageLayers.map((l) => l.attention.macsPerKey);
  }

  get embedding(): VocabEmbedding {
    return this.parts.embedding;
  }

  get lmHead(): LmHead {
    return this.parts.lmHead;
  }

  /** The families whose EAGLE-3 taps are wired and tested override this. */
  get tapsLayerInputs(): boolean {
    return false;
  }

  /** What this stage holds: every stage the rotary tables; the first the embedding, as the last does when its LM head is tied to it. */
  private get sublayers(): Layer[] {
    const { rotaries, embedding, finalNorm, lmHead } = this.parts;
    const [first, last] = [isFirstStage(this.stage), isLastStage(this.stage)];
    const withEmbedding = first || (last && lmHead.tiedToEmbedding);
    return [...rotaries, ...(withEmbedding ? [embedding] : []), ...this.stageLayers, ...(last ? [finalNorm, lmHead] : [])];
  }

  parameters(): ParameterSpec[] {
    return parametersOf(this.sublayers);
  }

  layerParameters(): ParameterSpec[][] {
    return this.stageLayers.map((layer) => layer.parameters());
  }

  offloadLayers(b: Backend, layers: readonly number[]): WeightStream {
    const count = this.stageLayers.length;
    if (layers.some((i) => !(Number.isInteger(i) && i >= 0 && i < count))) {
      throw new Error(`offloadLayers: layers [${layers.join(', ')}] are not all among the stage's ${count}`);
    }
    this.offload = new LayerOffload(b, layers);
    return this.offload.stream;
  }

  /** This stage's sublayers in order; offloaded decoder layers load through their weight stream's uploaders. */
  load(source: WeightSource, uploader: WeightUploader): void {
    const stageLayers: readonly Layer[] = this.stageLayers;
    for (const layer of this.sublayers) {
      const index = stageLayers.indexOf(layer);
      layer.load(source, this.offload === null || index < 0 ? uploader : this.offload.uploaderFor(index, uploader));
    }
  }

  loraTargets(): LoraTarget[] {
    return this.stageLayers.flatMap((layer) => layer.loraTargets?.() ?? []);
  }

  /** On the first stage (or the only one): the logits [logitsIndices.length, vocab], received from the last stage when there are several. */
  forward(b: Backend, step: StepInputs, cache: KvCache, tap?: HiddenStateTap): Tensor {
    if (!isFirstStage(this.stage)) throw new Error(`forward runs on the first pipeline stage; stage ${this.stage.index} runs runStage`);
    return this.runStage(b, step, cache, tap) ?? this.receiveLogits(b, step);
  }

  /**
   * This stage's part of a step: the logits on the last stage (also sent to the first when there
   * are several), null on the others (their residual stream sent to the next stage).
   */
  runStage(b: Backend, step: StepInputs, cache: KvCache, tap?: HiddenStateTap): Tensor | null {
    return this.runThrough(b, step, cache, this.stage.endLayer, tap);
  }

  /** On the first of several stages: the logits the last stage sends. */
  receiveLogits(b: Backend, step: StepInputs): Tensor {
    return b.receiveFromStage([step.batch.logitsIndices.length, this.config.vocabSize], this.stage.count - 1);
  }

  /**
   * On the first of several stages, with micro-batches in flight: runs this stage's layers and
   * returns the send of their residual stream to the next stage, which the caller makes once it
   * has received the logits due before it (docs/parallelism.md).
   */
  startStage(b: Backend, step: StepInputs, cache: KvCache): () => void {
    if (!isFirstStage(this.stage) || isLastStage(this.stage)) throw new Error(`startStage runs on the first of several pipeline stages, not on stage ${this.stage.index} of ${this.stage.count}`);
    const stream = this.layersThrough(b, step, cache, this.stage.endLayer, undefined);
    const handoff = this.stageHandoff(step);
    return () => {
      this.sendStream(b, stream);
      handoff(b);
    };
  }

  /**
   * Self-speculation's draft (CausalLM.earlyExit) for the families that offer it: the first
   * `numLayers` layers, then this model's final norm and LM head, on its own weights and KV cache
   * layers; it owns no parameters.
   */
  protected earlyExitAfter(numLayers: number): CausalLM {
    const total = this.parts.layers.length;
    if (!(Number.isInteger(numLayers) && numLayers >= 1 && numLayers < total)) {
      throw invalidArgument(`self-speculation drafts with the first N of the target's ${total} layers: N must be 1 to ${total - 1} (got ${numLayers})`);
    }
    // The draft runs the target's first layers and its LM head: both on one stage only.
    if (this.stage.count > 1) throw invalidArgument('self-speculation is not supported with pipeline parallelism');
    const model: CausalLM = this;
    return {
      config: this.config,
      stage: wholeModel(numLayers),
      kvLayers: this.kvLayers.slice(0, numLayers),
      decodeSelections: this.decodeSelections.slice(0, numLayers),
      attentionMacsPerKey: this.attentionMacsPerKey.slice(0, numLayers),
      embedding: this.embedding,
      lmHead: this.lmHead,
      tapsLayerInputs: this.tapsLayerInputs,
      parameters: () => [],
      load: () => {},
      forward: (b, step, cache, tap) => this.runThrough(b, step, cache, numLayers, tap)!,
      runStage: (b, step, cache, tap) => this.runThrough(b, step, cache, numLayers, tap),
      ...(model.rotaryRow === undefined ? {} : { rotaryRow: model.rotaryRow.bind(model) }),
      ...(model.prefixCacheSalt === undefined ? {} : { prefixCacheSalt: model.prefixCacheSalt.bind(model) }),
    };
  }

  /**
   * This stage's layers up to model layer `endLayer` (the stage's end, or an early exit's), then
   * the logits on the last stage or the residual stream sent to the next.
   */
  private runThrough(b: Backend, step: StepInputs, cache: KvCache, endLayer: number, tap: HiddenStateTap | undefined): Tensor | null {
    const stream = this.layersThrough(b, step, cache, endLayer, tap);
    if (!isLastStage(this.stage)) {
      this.sendStream(b, stream);
      this.stageHandoff(step)(b);
      return null;
    }
    const logits = this.finalLogits(b, step, stream, tap);
    if (this.stage.count > 1) b.sendToStage(logits, 0);
    return logits;
  }

  /** This stage's layers up to model layer `endLayer`, from the embedding or the stream the stage before sent: the residual stream they leave. */
  private layersThrough(b: Backend, step: StepInputs, cache: KvCache, endLayer: number, tap: HiddenStateTap | undefined): ResidualStream {
    const { firstLayer } = this.stage;
    // Heads read hidden states of the whole model on one device; parallel runs refuse them at load.
    if (tap !== undefined && this.stage.count > 1) throw new Error('hidden-state taps need the whole model on one pipeline stage');
    const stream = isFirstStage(this.stage) ? { residual: this.parts.embedding.forward(b, step), pending: null } : this.receiveStream(b, step);
    if (!isFirstStage(this.stage)) this.receiveHandoff(b, step);
    const wanted = tap?.layerInputs;
    const bad = wanted?.layers.find((i) => !(Number.isInteger(i) && i >= firstLayer && i < endLayer));
    if (bad !== undefined) throw new Error(`a hidden-state tap asks for the input of layer ${bad}; this forward runs layers [${firstLayer}, ${endLayer})`);
    const inputs = new Map<number, Tensor>();
    const runLayers = this.stageLayers.slice(0, endLayer - firstLayer);
    let i = firstLayer;
    for (const layer of this.offload === null ? runLayers : this.offload.inOrder(b, runLayers)) {
      if (wanted?.layers.includes(i)) inputs.set(i, layerInput(b, stream));
      stream.pending = this.layerForward(b, layer, stream, step, cache);
      i++;
    }
    wanted?.receive(wanted.layers.map((i) => inputs.get(i)!));
    return stream;
  }

  private sendStream(b: Backend, stream: ResidualStream): void {
    b.sendToStage(stream.residual, this.stage.index + 1);
    b.sendToStage(stream.pending!, this.stage.index + 1);
  }

  /** The residual stream the previous stage sent: every stage's layers leave a sublayer output pending. */
  private receiveStream(b: Backend, step: StepInputs): ResidualStream {
    const shape = [step.batch.numTokens, this.config.hiddenSize];
    const residual = b.receiveFromStage(shape, this.stage.index - 1);
    return { residual, pending: b.receiveFromStage(shape, this.stage.index - 1) };
  }

  /**
   * What this stage hands the next one besides the residual stream, taken once its layers have run
   * and sent after the stream: nothing, unless the next stage's first layer reads state the layers
   * before it left (GLM-5's shared sparse-attention layers). The next stage takes it with receiveHandoff.
   */
  protected stageHandoff(_step: StepInputs): (b: Backend) => void {
    return () => {};
  }

  /** Receives what the previous stage's stageHandoff sends, after its residual stream. */
  protected receiveHandoff(_b: Backend, _step: StepInputs): void {}

  /** One layer's step: updates `stream.residual` in place and returns the sublayer output it leaves pending. */
  protected abstract layerForward(b: Backend, layer: L, stream: ResidualStream, step: StepInputs, cache: KvCache): Tensor;

  /**
   * Logits of the sampled rows from the residual stream. The final norm works row by row, so
   * gathering the sampled rows first gives the same result for less work, unless the tap wants
   * every token's.
   */
  protected finalLogits(b: Backend, step: StepInputs, { residual, pending }: ResidualStream, tap: HiddenStateTap | undefined): Tensor {
    const { finalNorm, lmHead } = this.parts;
    let hidden: Tensor;
    if (tap?.tokenFinalRows !== undefined) {
      const all = pending === null ? finalNorm.forward(b, residual) : finalNorm.addAndForward(b, pending, residual);
      tap.tokenFinalRows(all);
      hidden = b.gatherLogitsRows(all, step);
    } else {
      const rows = b.gatherLogitsRows(residual, step);
      hidden = pending === null ? finalNorm.forward(b, rows) : finalNorm.addAndForward(b, b.gatherLogitsRows(pending, step), rows);
    }
    tap?.finalRows?.(hidden);
    const logits = lmHead.forward(b, hidden);
    const cap = this.parts.finalLogitSoftcap ?? null;
    if (cap !== null) b.softcap(logits, cap);
    return logits;
  }
}

/**
 * A copy of the residual stream entering a layer (residual + the output still pending), which later
 * layers leave alone. The copy is a one-part concatColumns, a device copy: a gather would upload its
 * row indices, which a forward recorded into a CUDA graph cannot do.
 */
function layerInput(b: Backend, { residual, pending }: ResidualStream): Tensor {
  const copy = b.concatColumns([residual]);
  if (pending !== null) b.addInto(copy, pending, null);
  return copy;
}
