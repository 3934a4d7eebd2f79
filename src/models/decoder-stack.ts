import type { Backend, KvCache, StepInputs, Tensor, WeightStream } from '../backend/backend.ts';
import type { LmHead, VocabEmbedding } from '../layers/embedding.ts';
import type { Linear } from '../layers/linear.ts';
import type { RmsNorm } from '../layers/norm.ts';
import { loadLayers, parametersOf, type Layer, type ParameterSpec, type WeightSource, type WeightUploader } from '../layers/parameters.ts';
import type { RotaryEmbedding } from '../layers/rotary.ts';
import type { LayerKvSpec } from '../step/kv-cache-layout.ts';
import type { CausalLM, HiddenStateTap } from './causal-lm.ts';
import { LayerOffload } from './layer-offload.ts';
import type { ModelConfig } from './model-config.ts';

/** A decoder layer as the model's bookkeeping sees it: its attention's KV spec and cost. */
export interface StackLayer extends Layer {
  readonly attention: { readonly kvSpec: LayerKvSpec; readonly macsPerKey: number };
}

/** What a decoder-only model is made of, in the order its parameters are listed and loaded. */
export interface DecoderParts<L extends StackLayer> {
  /** The rotary tables the layers share (one, or Gemma's global and local). */
  rotaries: readonly RotaryEmbedding[];
  embedding: VocabEmbedding;
  layers: readonly L[];
  finalNorm: RmsNorm;
  lmHead: LmHead;
}

/**
 * A decoder-only model over its parts: lists and loads their parameters and reads each layer's KV
 * spec and attention cost. A family builds the parts and writes the forward pass.
 */
export abstract class DecoderStack<C extends ModelConfig, L extends StackLayer> implements CausalLM {
  readonly config: C;
  protected readonly parts: DecoderParts<L>;
  private offload: LayerOffload | null = null;

  protected constructor(config: C, parts: DecoderParts<L>) {
    this.config = config;
    this.parts = parts;
  }

  get kvLayers(): LayerKvSpec[] {
    return this.parts.layers.map((l) => l.attention.kvSpec);
  }

  get attentionMacsPerKey(): number[] {
    return this.parts.layers.map((l) => l.attention.macsPerKey);
  }

  private get sublayers(): Layer[] {
    const { rotaries, embedding, layers, finalNorm, lmHead } = this.parts;
    return [...rotaries, embedding, ...layers, finalNorm, lmHead];
  }

  parameters(): ParameterSpec[] {
    return parametersOf(this.sublayers);
  }

  layerParameters(): ParameterSpec[][] {
    return this.parts.layers.map((layer) => layer.parameters());
  }

  offloadLayers(b: Backend, layers: readonly number[]): WeightStream {
    if (layers.some((i) => !(Number.isInteger(i) && i >= 0 && i < this.parts.layers.length))) {
      throw new Error(`offloadLayers: layers [${layers.join(', ')}] are not all among the model's ${this.parts.layers.length}`);
    }
    this.offload = new LayerOffload(b, layers);
    return this.offload.stream;
  }

  /** Every sublayer in order; offloaded decoder layers load through their weight stream's uploaders. */
  load(source: WeightSource, uploader: WeightUploader): void {
    const { rotaries, embedding, layers, finalNorm, lmHead } = this.parts;
    loadLayers([...rotaries, embedding], source, uploader);
    layers.forEach((layer, index) => layer.load(source, this.offload?.uploaderFor(index, uploader) ?? uploader));
    loadLayers([finalNorm, lmHead], source, uploader);
  }

  /** The decoder layers in order for a forward pass, offloaded ones fetched and awaited as they come. */
  protected layersInOrder(b: Backend): Iterable<L> {
    return this.offload === null ? this.parts.layers : this.offload.inOrder(b, this.parts.layers);
  }

  loraTargets(): Linear[] {
    return this.parts.layers.flatMap((layer) => layer.loraTargets?.() ?? []);
  }

  abstract forward(b: Backend, step: StepInputs, cache: KvCache, tap?: HiddenStateTap): Tensor;
}

/**
 * Logits of the sampled rows from the residual stream and the last sublayer's output still to be
 * added to it (null when none is pending). The final norm works row by row, so gathering the
 * sampled rows first gives the same result for less work.
 */
export function finalLogits(
  b: Backend,
  step: StepInputs,
  parts: { finalNorm: RmsNorm; lmHead: LmHead },
  residual: Tensor,
  pending: Tensor | null,
  tap: HiddenStateTap | undefined,
): Tensor {
  const rows = b.gatherLogitsRows(residual, step);
  const hidden = pending === null ? parts.finalNorm.forward(b, rows) : parts.finalNorm.addAndForward(b, b.gatherLogitsRows(pending, step), rows);
  tap?.finalRows(hidden);
  return parts.lmHead.forward(b, hidden);
}
