import type { Backend, KvCache, StepInputs, Tensor, WeightStream } from '../backend/backend.ts';
import type { LmHead, VocabEmbedding } from '../layers/embedding.ts';
import type { Layer, LoraTarget, ParameterSpec } from '../layers/parameters.ts';
import type { DecodeSelection, LayerKvSpec, SparseAttention, StreamingWindow } from '../step/kv-cache-layout.ts';
import type { ModelConfig } from './model-config.ts';
import type { MtpLayers } from './mtp-head.ts';
import type { PipelineStage } from './pipeline-stage.ts';

/**
 * Hidden states a forward pass hands out besides its logits, for speculative heads. A forward
 * without one does nothing more.
 */
export interface HiddenStateTap {
  /** Receives the final norm's output on the logits rows ([logitsIndices.length, hidden], the LM head's input: Medusa). */
  finalRows?(hidden: Tensor): void;
  /** Receives the final norm's output on every token of the step ([numTokens, hidden]: EAGLE, MTP). */
  tokenFinalRows?(hidden: Tensor): void;
  /**
   * Receives, for each of `layers` in order, the residual stream entering that layer on every
   * token ([numTokens, hidden] each: EAGLE-3). Only models with `tapsLayerInputs` hand it over.
   */
  layerInputs?: { layers: readonly number[]; receive(states: Tensor[]): void };
}

/** A decoder-only language model composed of layers: what the engine runs. */
export interface CausalLM extends Layer {
  readonly config: ModelConfig;
  /** The layers this model runs: all of them, or one pipeline stage's (docs/parallelism.md). */
  readonly stage: PipelineStage;
  /** What each of the stage's layers keeps per cached token, in layer order (its cache's layout starts at stage.firstLayer). */
  readonly kvLayers: readonly LayerKvSpec[];
  /**
   * Quest-style sparse decode attention (`--sparse-attention quest`) in every attention layer but
   * `denseLayers` (model layer indices) and those with a sliding window, which stay dense; called
   * before the weights are loaded, it changes those layers' KV specs (they keep key summaries).
   * Throws for a model whose attention cannot run it (MLA); absent on a model that never can (a draft).
   */
  useSparseAttention?(sparse: SparseAttention, denseLayers: readonly number[]): void;
  /** Each layer's choice of positions for a sparse decode, or null where a decode attends to every one its window holds. */
  readonly decodeSelections: readonly (DecodeSelection | null)[];
  /** Each layer's multiply-adds per token for each key it attends to (scores and values). */
  readonly attentionMacsPerKey: readonly number[];
  /**
   * Runs one step on the first pipeline stage (or the only one); returns logits
   * [logitsIndices.length, vocab] (the backend's tensor), handing `tap` its hidden states.
   */
  forward(b: Backend, step: StepInputs, cache: KvCache, tap?: HiddenStateTap): Tensor;
  /**
   * Runs this stage's part of a step, as every rank of a pipeline-parallel run does: the logits
   * on the last stage (sent back to the first when there are several), null on the others.
   */
  runStage(b: Backend, step: StepInputs, cache: KvCache, tap?: HiddenStateTap): Tensor | null;
  /**
   * With micro-batches in flight, on the first of several stages: runs this stage's layers and
   * returns the send of their residual stream to the next stage, made once the caller has received
   * the logits due before it. Absent: the model never runs on pipeline stages (a draft).
   */
  startStage?(b: Backend, step: StepInputs, cache: KvCache): () => void;
  /** On the first of several stages: the logits [logitsIndices.length, vocab] the last stage sends for `step`. */
  receiveLogits?(b: Backend, step: StepInputs): Tensor;
  /**
   * The rotary-table row of a token at `position` of a sequence whose original prompt had
   * `promptLength` tokens, for models whose rotation depends on more than the position (LongRoPE).
   * Absent: the row is the position.
   */
  rotaryRow?(position: number, promptLength: number): number;
  /**
   * The prefix-cache salt of a sequence whose prompt has `promptLength` tokens, for models whose
   * cached K/V depend on more than the tokens (LongRoPE): sequences of different salts never
   * share KV blocks. Absent: null for every sequence.
   */
  prefixCacheSalt?(promptLength: number): string | null;
  /** The linear layers LoRA adapters may adapt (docs/lora.md); absent or empty: the family serves no adapters. */
  loraTargets?(): LoraTarget[];
  /** The token embedding and LM head, which speculative heads share (EAGLE, MTP). */
  readonly embedding: VocabEmbedding;
  readonly lmHead: LmHead;
  /** Whether `forward` hands `HiddenStateTap.layerInputs` over (the pre-norm decoders do). */
  readonly tapsLayerInputs: boolean;
  /**
   * Self-speculation's draft (LayerSkip-style early exit): the first `numLayers` layers, then this
   * model's final norm and LM head, sharing its weights, run on this model's KV cache (its layers
   * are this model's first ones). Absent: the family has no early exit.
   */
  earlyExit?(numLayers: number): CausalLM;
  /**
   * Each decoder layer's parameters of this pipeline stage (the whole model on one stage), in layer
   * order: what weight offload chooses from. Absent: no layer can be offloaded.
   */
  layerParameters?(): ParameterSpec[][];
  /**
   * Keeps these decoder layers' weights (indices into layerParameters()) in host memory
   * (`--cpu-offload-gb`), each streamed to the device before it runs, on the returned stream;
   * called before the weights are loaded.
   */
  offloadLayers?(b: Backend, layers: readonly number[]): WeightStream;
}

/** A model family: how its config.json reads and how its layers compose. */
export interface ModelFamily<C extends ModelConfig = ModelConfig> {
  /** The family's name, listed with its model types when a model is not supported. */
  readonly name: string;
  /** The config.json model_type values it reads. */
  readonly modelTypes: readonly string[];
  /** `tensorNames`: the checkpoint's tensors as the model names them, where the family's layout varies with them; null without weights (dummy ones). */
  parseConfig(json: Record<string, unknown>, source: string, tensorNames?: readonly string[] | null): C;
  /**
   * The model's layers, not yet loaded; rotary tables will cover `maxPositions` positions. With
   * `streaming`, attention keeps StreamingLLM's sinks and window (docs/long-context.md). The model
   * runs (and loads) `stage`'s layers only.
   */
  create(config: C, maxPositions: number, streaming: StreamingWindow | null, stage: PipelineStage): CausalLM;
  /**
   * The multi-token prediction layers a config declares (--speculative-method mtp), for the
   * `modelTypes` whose checkpoints Keel reads them from. Absent: the family has none Keel reads.
   */
  readonly mtp?: { modelTypes: readonly string[]; layers(config: C): MtpLayers };
}
