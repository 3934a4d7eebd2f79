import type { Backend, KvCache, StepInputs, Tensor } from '../backend/backend.ts';
import { attentionHeadShard, PagedAttention } from '../layers/attention.ts';
import { Linear } from '../layers/linear.ts';
import { MoeBlock } from '../layers/moe.ts';
import { RmsNorm } from '../layers/norm.ts';
import { ComposedLayer, loaded, loadLayers, parametersOf, type Layer, type ParameterSpec, type WeightSource, type WeightUploader } from '../layers/parameters.ts';
import { transformedTensors } from '../layers/row-selection.ts';
import type { RotaryEmbedding } from '../layers/rotary.ts';
import type { AttentionKvSpec, DecodeSelection, SparseAttention } from '../step/kv-cache-layout.ts';
import { float32ToHostTensor, hostTensorToFloat32 } from '../tensor/host-dtype.ts';
import { gatherElements, mapValues } from '../tensor/host-ops.ts';
import type { HostTensor } from '../tensor/host-tensor.ts';
import type { Gemma4Config } from './gemma4-config.ts';

/*
 * The parts of a Gemma 4 layer that Gemma 3's has not: attention whose keys may be its values or
 * another layer's, the mixture of experts beside the dense MLP, the per-layer input embeddings and
 * the layer's output scalar.
 */

/** Each layer's raw key/value projection output of the current forward, for the KV-shared layers that read it. */
export type StepKeysValues = Map<number, Tensor>;

/**
 * Gemma 4's attention: q_norm, k_norm and a weightless v_norm per head, RoPE, scores unscaled
 * (scale 1: the norms set the queries' size). A full layer with attention_k_eq_v has no v_proj: its
 * values are k_proj's output, normed as values. A KV-shared layer has q_proj, q_norm and o_proj
 * only: it attends over its source layer's cached keys and values.
 *
 * q and k/v run as two matmuls so that a KV-shared layer can pair its queries with its source's
 * raw k/v output of the same step (`StepKeysValues`), which the core norms and caches again unchanged.
 */
export class Gemma4Attention implements Layer {
  readonly core: PagedAttention;
  readonly layer: number;
  private readonly q: Linear;
  /** k_proj and v_proj stacked (k_proj twice with attention_k_eq_v); null on a KV-shared layer. */
  private readonly kv: Linear | null;
  private readonly o: Linear;
  private readonly source: Gemma4Attention | null;

  constructor(config: Gemma4Config, layer: number, rotary: RotaryEmbedding, source: Gemma4Attention | null) {
    const p = `model.layers.${layer}.self_attn`;
    const { numHeads, hiddenSize, rmsNormEps: eps, attentionBias: bias } = config;
    const { headDim, numKvHeads, sliding } = config.layers[layer];
    this.layer = layer;
    this.source = source;
    const headRows = (heads: { start: number; count: number }) => ({ start: heads.start * headDim, count: heads.count * headDim });
    this.q = new Linear({
      parts: [{ name: `${p}.q_proj.weight`, rows: numHeads * headDim }],
      inFeatures: hiddenSize,
      bias,
      shard: 'column',
      shardRows: (_, shard) => [headRows(attentionHeadShard(numHeads, numKvHeads, shard).q)],
    });
    const valueName = config.attentionKEqV && !sliding ? `${p}.k_proj.weight` : `${p}.v_proj.weight`;
    this.kv =
      source !== null
        ? null
        : new Linear({
            parts: [
              { name: `${p}.k_proj.weight`, rows: numKvHeads * headDim },
              { name: valueName, rows: numKvHeads * headDim },
            ],
            inFeatures: hiddenSize,
            bias,
            shard: 'column',
            shardRows: (_, shard) => [headRows(attentionHeadShard(numHeads, numKvHeads, shard).kv)],
          });
    this.o = Linear.single(`${p}.o_proj.weight`, hiddenSize, numHeads * headDim, 'row', bias);
    const norm = (name: string) => new RmsNorm(`${p}.${name}.weight`, headDim, eps);
    this.core = new PagedAttention({
      layer,
      numHeads,
      numKvHeads,
      headDim,
      scale: 1,
      slidingWindow: sliding ? config.slidingWindow : null,
      softcap: null,
      sinks: null,
      rotary,
      qkNorm: { q: norm('q_norm'), k: source === null ? norm('k_norm') : source.keyNorm },
      valueNorm: new RmsNorm(`${p}.v_norm`, headDim, eps, { weightless: true }),
      kvScaleNames: { k: [`${p}.k_scale`], v: [`${p}.v_scale`] },
      kvSource: source?.core ?? null,
    });
  }

  /** Its key norm, which the layers sharing its keys and values apply to them again. */
  private get keyNorm(): RmsNorm {
    return this.core.keyNorm!;
  }

  get kvSpec(): AttentionKvSpec {
    return this.core.kvSpec;
  }

  get macsPerKey(): number {
    return this.core.macsPerKey;
  }

  get decodeSelection(): DecodeSelection | null {
    return this.core.decodeSelection;
  }

  /** Quest on a full layer that caches its own keys (a KV-shared layer refuses it: add it to --sparse-dense-layers). */
  useSparseAttention(sparse: SparseAttention): void {
    this.core.useSparseAttention(sparse);
  }

  private get sublayers(): Layer[] {
    return [this.q, ...(this.kv === null ? [] : [this.kv]), this.core, this.o];
  }

  /** With attention_k_eq_v, k_proj is listed once though the k/v projection reads it twice. */
  parameters(): ParameterSpec[] {
    const specs = parametersOf(this.sublayers);
    return specs.filter((spec, i) => specs.findIndex((s) => s.name === spec.name) === i);
  }

  load(source: WeightSource, uploader: WeightUploader): void {
    loadLayers(this.sublayers, source, uploader);
  }

  forward(b: Backend, x: Tensor, step: StepInputs, cache: KvCache, keysValues: StepKeysValues): Tensor {
    const heads = this.core.forward(b, b.concatColumns([this.q.forward(b, x), this.keysValues(b, x, keysValues)]), step, cache);
    return b.allReduce(this.o.forward(b, heads));
  }

  /** Its raw k/v projection of x, kept for the layers sharing it; a KV-shared layer's, its source's of this step. */
  private keysValues(b: Backend, x: Tensor, step: StepKeysValues): Tensor {
    if (this.kv !== null) {
      const kv = this.kv.forward(b, x);
      step.set(this.layer, kv);
      return kv;
    }
    const source = this.source!.layer;
    const kv = step.get(source);
    if (kv === undefined) throw new Error(`layer ${this.layer} runs before layer ${source}, whose keys and values it reads`);
    return kv;
  }
}

/**
 * The mixture of experts beside a Gemma 4 layer's dense MLP: the router reads the residual stream
 * through an RMSNorm whose weight is `router.scale` · hidden^-0.5 (transformers' weightless norm,
 * then that product), softmax over the experts, top k renormalized, each chosen expert's weight
 * times its `router.per_expert_scale`, which is folded into the expert's down projection at load
 * (an expert's output is linear in it). The experts read the residual stream through
 * `pre_feedforward_layernorm_2`.
 */
export class Gemma4Experts implements Layer {
  private readonly routerNorm: RmsNorm;
  readonly inputNorm: RmsNorm;
  private readonly block: MoeBlock;
  private readonly perExpertScale: string;
  private readonly scaleName: string;
  private readonly downName: string;
  private readonly hiddenSize: number;
  private readonly numExperts: number;

  constructor(config: Gemma4Config, layer: number) {
    const p = `model.layers.${layer}`;
    const moe = config.moe!;
    this.hiddenSize = config.hiddenSize;
    this.numExperts = moe.numExperts;
    this.scaleName = `${p}.router.scale`;
    this.perExpertScale = `${p}.router.per_expert_scale`;
    this.downName = `${p}.experts.down_proj`;
    this.routerNorm = new RmsNorm(this.scaleName, config.hiddenSize, config.rmsNormEps);
    this.inputNorm = new RmsNorm(`${p}.pre_feedforward_layernorm_2.weight`, config.hiddenSize, config.rmsNormEps);
    this.block = new MoeBlock({
      hiddenSize: config.hiddenSize,
      intermediateSize: moe.intermediateSize,
      numExperts: moe.numExperts,
      router: `${p}.router.proj.weight`,
      routerBias: false,
      routing: { topK: moe.topK, scoring: 'softmax', selectionBias: null, groups: null, normalize: true, scale: 1 },
      experts: { layout: 'fused-output-major', gateUp: `${p}.experts.gate_up_proj`, gateUpBias: null, down: this.downName, downBias: null },
      activation: config.activation,
      shared: null,
    });
  }

  parameters(): ParameterSpec[] {
    return [...parametersOf([this.routerNorm, this.inputNorm, this.block]), { name: this.perExpertScale, shape: [this.numExperts] }];
  }

  load(source: WeightSource, uploader: WeightUploader): void {
    const rootHidden = this.hiddenSize ** -0.5;
    const scaled = transformedTensors(source, (name) => {
      if (name === this.scaleName) return (t) => mapValues(t, (w) => w * rootHidden);
      if (name === this.downName) return (t) => scaleExperts(t, hostTensorToFloat32(source.read(this.perExpertScale)));
      return null;
    });
    this.routerNorm.load(scaled, uploader);
    this.inputNorm.load(source, uploader);
    this.block.load(scaled, uploader);
  }

  /** The experts' output for `residual` [numTokens, hidden] (before their post norm). */
  forward(b: Backend, residual: Tensor): Tensor {
    return this.block.forwardRoutedBy(b, this.routerNorm.forward(b, residual), this.inputNorm.forward(b, residual));
  }
}

/** Expert e's down projection [E, hidden, n] times scales[e]. */
function scaleExperts(down: HostTensor, scales: Float32Array): HostTensor {
  const values = hostTensorToFloat32(down);
  const perExpert = values.length / scales.length;
  for (let i = 0; i < values.length; i++) values[i] *= scales[Math.floor(i / perExpert)];
  return float32ToHostTensor(values, 'f32', [...down.shape]);
}

/**
 * Per-layer input embeddings (PLE, the small Gemma 4 models): for each layer i, a
 * hidden_size_per_layer_input-wide input from the token's row of `embed_tokens_per_layer` (times
 * √width) and a projection of the token's embedding (`per_layer_model_projection`, times
 * hidden^-0.5, then `per_layer_projection_norm`), summed and scaled by 2^-0.5. The checkpoint
 * packs every layer's table columns and projection rows side by side; they load as one table
 * and one projection per layer, so each layer's input is its own tensor.
 */
export class PerLayerInputs implements Layer {
  private readonly numLayers: number;
  private readonly width: number;
  private readonly vocabSize: number;
  private readonly hiddenSize: number;
  private readonly norm: RmsNorm;
  private tables: Tensor[] | null = null;
  private projections: Tensor[] | null = null;

  constructor(config: Gemma4Config) {
    const ple = config.perLayerInput!;
    this.numLayers = config.numLayers;
    this.width = ple.hiddenSize;
    this.vocabSize = ple.vocabSize;
    this.hiddenSize = config.hiddenSize;
    this.norm = new RmsNorm('model.per_layer_projection_norm.weight', ple.hiddenSize, config.rmsNormEps);
  }

  parameters(): ParameterSpec[] {
    const packed = this.numLayers * this.width;
    return [
      { name: 'model.embed_tokens_per_layer.weight', shape: [this.vocabSize, packed], access: { kind: 'rows' } },
      { name: 'model.per_layer_model_projection.weight', shape: [packed, this.hiddenSize] },
      ...this.norm.parameters(),
    ];
  }

  load(source: WeightSource, uploader: WeightUploader): void {
    const { numLayers, width, vocabSize, hiddenSize } = this;
    const table = source.read('model.embed_tokens_per_layer.weight');
    const projection = source.read('model.per_layer_model_projection.weight');
    const layers = Array.from({ length: numLayers }, (_, i) => i);
    this.tables = layers.map((i) => uploader.loadWeight(gatherElements(table, [vocabSize, width], (row, col) => row * numLayers * width + i * width + col)));
    this.projections = layers.map((i) => uploader.loadWeight(gatherElements(projection, [width, hiddenSize], (row, col) => (i * width + row) * hiddenSize + col)));
    this.norm.load(source, uploader);
  }

  /** Each layer's input [numTokens, width] for the step's tokens, whose scaled embeddings are `embeddings`. */
  forward(b: Backend, embeddings: Tensor, step: StepInputs): Tensor[] {
    const tables = loaded(this.tables, 'model.embed_tokens_per_layer.weight');
    const projections = loaded(this.projections, 'model.per_layer_model_projection.weight');
    return tables.map((table, i) => {
      const projected = b.linear(embeddings, projections[i], null);
      b.scale(projected, this.hiddenSize ** -0.5);
      const input = this.norm.forward(b, projected);
      b.addInto(input, b.embedding(table, step, Math.fround(Math.sqrt(this.width)), 0), null);
      b.scale(input, 2 ** -0.5);
      return input;
    });
  }
}

/** A layer's per-layer input gate: h += norm(projection(act(gate(h)) · input)). */
export class PerLayerInputGate extends ComposedLayer {
  private readonly gate: Linear;
  private readonly projection: Linear;
  readonly norm: RmsNorm;
  private readonly activation: Gemma4Config['activation'];

  constructor(config: Gemma4Config, layer: number) {
    super();
    const p = `model.layers.${layer}`;
    const width = config.perLayerInput!.hiddenSize;
    this.gate = Linear.single(`${p}.per_layer_input_gate.weight`, width, config.hiddenSize, 'replicated');
    this.projection = Linear.single(`${p}.per_layer_projection.weight`, config.hiddenSize, width, 'replicated');
    this.norm = new RmsNorm(`${p}.post_per_layer_input_norm.weight`, config.hiddenSize, config.rmsNormEps);
    this.activation = config.activation;
  }

  protected get sublayers(): Layer[] {
    return [this.gate, this.projection, this.norm];
  }

  /** What the layer adds to the residual stream h [numTokens, hidden] for its input [numTokens, width]. */
  forward(b: Backend, h: Tensor, input: Tensor): Tensor {
    // gatedActivation(x) is act(x[:, :n]) · x[:, n:]: the gate's output beside the input.
    const gated = b.gatedActivation(b.concatColumns([this.gate.forward(b, h), input]), this.activation);
    return this.norm.forward(b, this.projection.forward(b, gated));
  }
}

/** The layer's output scalar (`layer_scalar`, a one-value buffer the checkpoint keeps). */
export class LayerScalar implements Layer {
  private readonly name: string;
  private scalar: number | null = null;

  constructor(layer: number) {
    this.name = `model.layers.${layer}.layer_scalar`;
  }

  parameters(): ParameterSpec[] {
    return [{ name: this.name, shape: [1] }];
  }

  load(source: WeightSource): void {
    this.scalar = hostTensorToFloat32(source.read(this.name))[0];
  }

  get value(): number {
    return loaded(this.scalar, this.name);
  }
}
