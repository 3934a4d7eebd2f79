import type { AttentionParams, Backend, KvCache, QueryTemperature, StepInputs, Tensor } from '../backend/backend.ts';
import type { AttentionKvSpec, DecodeSelection, SparseAttention } from '../step/kv-cache-layout.ts';
import { hostTensorToFloat32 } from '../tensor/host-dtype.ts';
import { float32Tensor } from '../tensor/host-ops.ts';
import type { HostTensor } from '../tensor/host-tensor.ts';
import { invalidArgument, invalidModel } from '../errors.ts';
import { Linear, type RowRange } from './linear.ts';
import { evenPart, readSlice, shardOf, WHOLE } from './shard.ts';
import { selectedRows, transformedTensors } from './row-selection.ts';
import { interleavedRow, swappedHalvesRow, withPermutedElements, withPermutedLoraRows, withPermutedRows } from './interleaved-rope.ts';
import { RmsNorm } from './norm.ts';
import { loaded, loadLayers, parametersOf, type Layer, type LoraTarget, type ParameterSpec, type TensorParallelShard, type WeightSource, type WeightUploader } from './parameters.ts';
import type { RotaryEmbedding } from './rotary.ts';

export interface AttentionOptions {
  /** This layer's index in the KV cache layout. */
  layer: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  scale: number;
  slidingWindow: number | null;
  /** Chunked attention's chunk (AttentionParams.attentionChunk: Llama 4); absent: none. */
  attentionChunk?: number | null;
  /** Query temperature tuning (AttentionParams.queryTemperature: Llama 4's NoPE layers, Ministral 3); absent: none. */
  queryTemperature?: QueryTemperature | null;
  softcap: number | null;
  /** Checkpoint name of the [numHeads] learned sink logits (gpt-oss), or null. */
  sinks: string | null;
  rotary: RotaryEmbedding;
  /** Per-head norms of queries and keys before rotation (Qwen3, Gemma 3), or null. */
  qkNorm: { q: RmsNorm; k: RmsNorm } | null;
  /**
   * The q/k norms apply after rotation instead (Hunyuan). No op rotates without caching, so the
   * layer rotates and caches, norms q and k, then caches the normed keys over the unnormed ones
   * through `identity`, a table of scaling `none` (one more cache write per layer). Absent: before.
   */
  qkNormAfterRope?: { identity: RotaryEmbedding } | null;
  /**
   * Checkpoint names an fp8 KV cache's per-tensor key and value scales may have, tried in order
   * (absent tensors leave the scale 1), or null for none.
   */
  kvScaleNames?: { k: readonly string[]; v: readonly string[] } | null;
  /** Every device holds every head, whatever its tensor-parallel shard (OLMo 2's attention: SelfAttentionOptions.projectionNorm). */
  replicatedHeads?: boolean;
  /** A per-head norm of the values before they are cached (Gemma 4's weightless v_norm); runs with qkNorm. Absent: none. */
  valueNorm?: RmsNorm | null;
  /**
   * An earlier layer whose cached keys and values this one reads instead of caching its own
   * (Gemma 4's KV-shared layers): its KV spec says so (`sharedKvDistance`), `qkNorm.k` is that
   * layer's key norm (listed and loaded there), and the k/v heads of its packed qkv must be that
   * layer's of the same step, which the cache write then stores again unchanged (no op rotates
   * queries without caching). Absent: its own cache.
   */
  kvSource?: PagedAttention | null;
}

/**
 * The paged attention core of one layer: optional q/k norms, rotary embedding and the cache write,
 * then causal attention over the sequence's cached keys and values. It declares what the layer
 * keeps in the KV cache.
 */
export class PagedAttention implements Layer {
  readonly layer: number;
  private readonly options: AttentionOptions;
  private sinks: Tensor | null = null;
  /** The heads this device holds: all of them until a tensor-parallel shard is loaded. */
  private heads: { numHeads: number; numKvHeads: number };
  private kvScales = { k: 1, v: 1 };
  private sparse: SparseAttention | null = null;

  constructor(options: AttentionOptions) {
    if (options.numHeads % options.numKvHeads !== 0) {
      throw new Error(`${options.numHeads} query heads do not split evenly over ${options.numKvHeads} kv heads`);
    }
    if (options.rotary.config.rotaryDim > options.headDim) {
      throw new Error(`rotary dim ${options.rotary.config.rotaryDim} exceeds head dim ${options.headDim}`);
    }
    // StreamingLLM rotates queries inside attention, after any norm could run.
    if (options.qkNormAfterRope && options.rotary.streaming !== null) {
      throw invalidArgument(`layer ${options.layer} norms q and k after RoPE: StreamingLLM (--streaming-sinks/--streaming-window) does not apply to it`);
    }
    if (options.valueNorm && options.qkNorm === null) throw new Error(`layer ${options.layer}: a value norm runs with the q/k norms`);
    const source = options.kvSource ?? null;
    if (source !== null && !(source.layer < options.layer && source.options.numKvHeads === options.numKvHeads && source.options.headDim === options.headDim)) {
      throw new Error(`layer ${options.layer} cannot read the keys and values of layer ${source.layer}: it must come earlier, with the same kv heads and head dim`);
    }
    this.layer = options.layer;
    this.options = options;
    this.heads = { numHeads: options.numHeads, numKvHeads: options.numKvHeads };
  }

  /**
   * What this device caches per token: its key/value heads (and per block, with sparse attention,
   * their key summaries). A chunked layer reads no further back than its chunk, so the cache keeps
   * it as a window of that width.
   */
  get kvSpec(): AttentionKvSpec {
    const source = this.options.kvSource ?? null;
    if (source !== null) {
      const { keySummaries: _, ...spec } = source.kvSpec;
      return { ...spec, sharedKvDistance: this.layer - source.layer };
    }
    const { headDim, slidingWindow, attentionChunk } = this.options;
    const spec: AttentionKvSpec = { kind: 'attention', numKvHeads: this.heads.numKvHeads, headDim, slidingWindow: slidingWindow ?? attentionChunk ?? null };
    return this.sparse === null ? spec : { ...spec, keySummaries: true };
  }

  /** Decodes attend to the blocks Quest selects (`SparseAttention`); set before the cache is laid out. */
  useSparseAttention(sparse: SparseAttention): void {
    if (this.options.kvSource) throw invalidArgument(`layer ${this.layer} reads another layer's keys and values: sparse attention does not apply to it (add it to --sparse-dense-layers)`);
    if (this.kvSpec.slidingWindow !== null) throw invalidArgument(`layer ${this.layer} has a sliding window or attention chunk: sparse attention does not apply to it`);
    if (this.options.rotary.streaming !== null) throw invalidArgument('sparse attention does not combine with StreamingLLM (--streaming-sinks/--streaming-window)');
    this.sparse = sparse;
  }

  /** The per-head key norm, or null. */
  get keyNorm(): RmsNorm | null {
    return this.options.qkNorm?.k ?? null;
  }

  /** Quest's choice of blocks when sparse attention is on (`useSparseAttention`). */
  get decodeSelection(): DecodeSelection | null {
    return this.sparse === null ? null : { kind: 'quest', sparse: this.sparse };
  }

  /** Multiply-adds per query token for each cached key it attends to: a score and a value row per head. */
  get macsPerKey(): number {
    return 2 * this.heads.numHeads * this.options.headDim;
  }

  /** Its q/k (and value) norms, less a KV-shared layer's key norm, which is its source's. */
  private get ownNorms(): Layer[] {
    const { qkNorm, kvSource, valueNorm } = this.options;
    if (qkNorm === null) return [];
    return [qkNorm.q, ...(kvSource ? [] : [qkNorm.k]), ...(valueNorm ? [valueNorm] : [])];
  }

  parameters(): ParameterSpec[] {
    const { sinks, numHeads } = this.options;
    return [...(sinks === null ? [] : [{ name: sinks, shape: [numHeads] }]), ...parametersOf(this.ownNorms)];
  }

  load(source: WeightSource, uploader: WeightUploader): void {
    const { sinks, numHeads, numKvHeads, replicatedHeads } = this.options;
    const { q, kv } = attentionHeadShard(numHeads, numKvHeads, replicatedHeads ? WHOLE : shardOf(source));
    this.heads = { numHeads: q.count, numKvHeads: kv.count };
    if (sinks !== null) this.sinks = uploader.loadWeight(readSlice(source, sinks, { dim: 0, ...q }));
    loadLayers(this.ownNorms, source, uploader);
    const names = this.options.kvScaleNames;
    // A KV-shared layer stores its source's keys again: with its source's scales, so the codes are the same.
    if (this.options.kvSource) this.kvScales = this.options.kvSource.kvScales;
    else if (names) this.kvScales = { k: optionalScale(source, names.k), v: optionalScale(source, names.v) };
  }

  private get params(): AttentionParams {
    const { headDim, scale, slidingWindow, softcap } = this.options;
    const { numHeads, numKvHeads } = this.heads;
    const sinks = this.options.sinks === null ? null : loaded(this.sinks, this.options.sinks);
    const { rotary } = this.options;
    const streaming = rotary.streaming === null ? null : { ...rotary.streaming, rope: rotary.table };
    const params: AttentionParams = { numHeads, numKvHeads, headDim, scale, slidingWindow, softcap, sinks, streaming, kvScales: this.kvScales, sparse: this.sparse };
    // Only layers that have them name them, so every other layer's params are as they always were.
    const { attentionChunk, queryTemperature } = this.options;
    return { ...params, ...(attentionChunk != null && { attentionChunk }), ...(queryTemperature != null && { queryTemperature }) };
  }

  /** qkv [numTokens, (numHeads + 2 * numKvHeads) * headDim] is rotated in place; returns [numTokens, numHeads * headDim]. */
  forward(b: Backend, qkv: Tensor, step: StepInputs, cache: KvCache): Tensor {
    const params = this.params;
    const { qkNorm, qkNormAfterRope } = this.options;
    const norm = qkNorm === null ? null : { q: qkNorm.q.weight, k: qkNorm.k.weight, v: this.options.valueNorm?.weight ?? null, eps: qkNorm.q.eps };
    if (qkNormAfterRope) {
      // Normed after the rotation: rotate and cache, then norm and cache again under the identity rotation.
      b.ropeAndCacheWrite(qkv, this.options.rotary.table, cache, this.layer, step, params);
      b.ropeAndCacheWrite(qkv, qkNormAfterRope.identity.table, cache, this.layer, step, params, norm);
    } else {
      b.ropeAndCacheWrite(qkv, this.options.rotary.table, cache, this.layer, step, params, norm);
    }
    return b.attention(qkv, cache, this.layer, step, params);
  }
}

/**
 * The query heads and key/value heads a tensor-parallel shard holds: an equal part of each, or,
 * with fewer key/value heads than devices, the one key/value head its query heads read
 * (replicated on the devices that share it).
 */
export function attentionHeadShard(numHeads: number, numKvHeads: number, shard: TensorParallelShard): { q: RowRange; kv: RowRange } {
  const q = evenPart(numHeads, shard, 'the attention heads');
  if (numKvHeads >= shard.size) return { q, kv: evenPart(numKvHeads, shard, 'the key/value heads') };
  if (shard.size % numKvHeads !== 0) throw invalidArgument(`tensor-parallel size ${shard.size} is not a multiple of the ${numKvHeads} key/value heads, so they cannot be replicated evenly`);
  return { q, kv: { start: Math.floor((shard.rank * numKvHeads) / shard.size), count: 1 } };
}

/** The first of `names` the source holds, as a per-tensor scale; 1 when it holds none. */
function optionalScale(source: WeightSource, names: readonly string[]): number {
  for (const name of names) {
    const t = source.readOptional?.(name) ?? null;
    if (t === null) continue;
    const values = hostTensorToFloat32(t);
    if (values.length !== 1) throw invalidModel(`${name} holds ${values.length} values: Keel reads one KV-cache scale per layer (per-tensor), not per head`);
    if (!(values[0] > 0 && Number.isFinite(values[0]))) throw invalidModel(`${name} is ${values[0]}: a KV-cache scale must be a positive number`);
    return values[0];
  }
  return 1;
}

/** Checkpoint names of an attention block's projections: separate q/k/v, or one fused qkv (Phi-3). */
export type QkvNames = { q: string; k: string; v: string } | { qkv: string };

/** The checkpoint names of a `self_attn` module's separate q, k, v and o projections, under `module` (`model.layers.3.self_attn`). */
export function projectionNames(module: string): { qkv: QkvNames; o: string } {
  return { qkv: { q: `${module}.q_proj.weight`, k: `${module}.k_proj.weight`, v: `${module}.v_proj.weight` }, o: `${module}.o_proj.weight` };
}

/**
 * q_proj's and k_proj's rows (weights and biases) in rotate_half order, each head's rotary dims
 * read from where the checkpoint's rotation pairs them (`rotaryRow`: interleaved pairs, or halves
 * swapped), and the elements of the q/k norms' weights alike (a norm over a head, or over the
 * whole projection, reads its values in any order, as long as its weights follow them: per-head
 * norms' shared [headDim] weights, projection norms' whole ones).
 */
function rotaryRowOrder(
  options: SelfAttentionOptions,
  rotaryRow: (k: number, ropeDim: number) => number,
): { rows: Record<string, (row: number) => number>; elements: Record<string, (element: number) => number> } {
  const { qkv, headDim, rotary, qkNorm, projectionNorm } = options;
  if ('qkv' in qkv || options.outputGate === true) {
    throw new Error(`${options.o}: permuted RoPE rows read q_proj and k_proj apiece, without an output gate`);
  }
  const ropeDim = rotary.config.rotaryDim;
  const row = (r: number) => {
    const within = r % headDim;
    return within < ropeDim ? r - within + rotaryRow(within, ropeDim) : r;
  };
  const bias = (name: string) => name.replace(/\.weight$/, '.bias');
  const norms = [qkNorm, projectionNorm].flatMap((pair) => (pair ? [pair.q, pair.k] : []));
  const normWeights = norms.flatMap((norm) => norm.parameters().map((p) => p.name));
  return {
    rows: { [qkv.q]: row, [bias(qkv.q)]: row, [qkv.k]: row, [bias(qkv.k)]: row },
    elements: Object.fromEntries(normWeights.map((name) => [name, row])),
  };
}

/** A norm over a whole q or k projection (SelfAttentionOptions.projectionNorm): [numTokens, heads · headDim] in and out. */
export type ProjectionNorm = Layer & { forward(b: Backend, x: Tensor): Tensor };

/**
 * A layer's q and k RMSNorms, weights `names.q` / `names.k`: per head (`over` 'head', each head_dim
 * wide) or over the whole projections (`over` 'projection', every head together).
 */
export function qkNormLayers(
  names: { q: string; k: string },
  over: 'head' | 'projection',
  shape: { numHeads: number; numKvHeads: number; headDim: number },
  eps: number,
): Pick<SelfAttentionOptions, 'qkNorm' | 'projectionNorm'> {
  const { numHeads, numKvHeads, headDim } = shape;
  if (over === 'head') return { qkNorm: { q: new RmsNorm(names.q, headDim, eps), k: new RmsNorm(names.k, headDim, eps) }, projectionNorm: null };
  return { qkNorm: null, projectionNorm: { q: new RmsNorm(names.q, numHeads * headDim, eps), k: new RmsNorm(names.k, numKvHeads * headDim, eps) } };
}

export interface SelfAttentionOptions extends AttentionOptions {
  hiddenSize: number;
  /** Width of the q/k/v projections' input when it is not hiddenSize (EAGLE-3: a token embedding beside a hidden state). */
  inputSize?: number;
  qkv: QkvNames;
  o: string;
  qkvBias: boolean;
  oBias: boolean;
  /**
   * The query projection holds each head's query followed by its output gate (Qwen3-Next,
   * Qwen3.5: 2 · headDim rows a head), and the attention output is multiplied by σ(gate) before
   * the output projection. Absent: no gate.
   */
  outputGate?: boolean;
  /**
   * An output gate of its own projection, `name` [numHeads (perHead) or numHeads · headDim, hidden]
   * without a bias: the attention output times `activation` of it, one value per head broadcast
   * over the head, or one per element (Laguna's softplus g_proj, AFMoE's sigmoid gate_proj).
   * Absent or null: none.
   */
  projectedGate?: ProjectedGate | null;
  /**
   * Norms over the whole query projection and the whole key projection, in place of per-head
   * norms of shared weights: OLMo 2 and 3's RMSNorms over every head together, Cohere's LayerNorms
   * per head with each head's own weights. q, k and v then run as three matmuls so each output
   * can be normed alone; since a norm's weights span every head, each tensor-parallel device holds
   * all of them (transformers' own plan for OLMo 2 gathers q/k/v too): attention is replicated,
   * and only the MLP is sharded.
   */
  projectionNorm?: { q: ProjectionNorm; k: ProjectionNorm } | null;
  /**
   * Values narrower than the q/k heads (MiMo-V2-Flash's v_head_dim), times `scale` (its
   * attention_value_scale): `NarrowValues`. Absent or null: values as wide as the heads, unscaled.
   */
  narrowValues?: NarrowValues | null;
  /**
   * The checkpoint's rotary dims pair as (x[2i], x[2i+1]) (ERNIE 4.5, Cohere, GLM-4, Llama 4): q_proj's
   * and k_proj's rows (and biases) are read permuted into rotate_half order, quantized ones as codes
   * (interleaved-rope.ts). Absent: false.
   */
  interleavedRope?: boolean;
  /**
   * The checkpoint rotates by −θ (NanoChat's rotate_half, (x2, −x1)): q_proj's and k_proj's rows are
   * read with each head's rotary halves swapped, as `interleavedRope` permutes them. Absent: false.
   */
  reversedRope?: boolean;
}

/**
 * Value heads of `valueDim` < headDim, scaled by `scale` before they are cached. The layer reads
 * v_proj's rows (and bias) zero-padded per head to headDim and times `scale`, and o_proj's columns
 * zero-padded per head alike, so the KV cache, the attention kernels and tensor parallelism see
 * heads of one width: exact, since a zero value row adds zeros to each head's output, which o_proj's
 * zero columns ignore, at the cost of caching headDim − valueDim zeros per kv head. Read through
 * `read` (transformedTensors), so such a layer loads 16-bit weights.
 */
export interface NarrowValues {
  valueDim: number;
  scale: number;
}

/** `source` with v_proj and o_proj read as NarrowValues pads them; `parameters` maps their shapes back to the checkpoint's. */
function narrowValueTensors(options: SelfAttentionOptions, narrow: NarrowValues): { source: (s: WeightSource) => WeightSource; checkpointShape: (p: ParameterSpec) => ParameterSpec } {
  const { qkv, o, headDim } = options;
  if ('qkv' in qkv) throw new Error(`${o}: narrow value heads are read from a separate v_proj`);
  const { valueDim, scale } = narrow;
  const vBias = qkv.v.replace(/\.weight$/, '.bias');
  // Row r of a padded [heads · headDim, cols] tensor: row h · valueDim + (r % headDim) of the checkpoint's, or zero.
  const padRows = (t: HostTensor, factor: number): HostTensor => {
    const cols = t.shape.length === 2 ? t.shape[1] : 1;
    const heads = t.shape[0] / valueDim;
    const values = hostTensorToFloat32(t);
    const out = new Float32Array(heads * headDim * cols);
    for (let h = 0; h < heads; h++) {
      for (let d = 0; d < valueDim; d++) {
        for (let c = 0; c < cols; c++) out[(h * headDim + d) * cols + c] = values[(h * valueDim + d) * cols + c] * factor;
      }
    }
    return float32Tensor(out, t.shape.length === 2 ? [heads * headDim, cols] : [heads * headDim]);
  };
  // Column c of a padded [rows, heads · headDim] tensor: column h · valueDim + (c % headDim) of the checkpoint's, or zero.
  const padColumns = (t: HostTensor): HostTensor => {
    const [rows, cols] = t.shape;
    const heads = cols / valueDim;
    const values = hostTensorToFloat32(t);
    const out = new Float32Array(rows * heads * headDim);
    for (let r = 0; r < rows; r++) {
      for (let h = 0; h < heads; h++) {
        for (let d = 0; d < valueDim; d++) out[r * heads * headDim + h * headDim + d] = values[r * cols + h * valueDim + d];
      }
    }
    return float32Tensor(out, [rows, heads * headDim]);
  };
  const narrowed = (n: number) => (n / headDim) * valueDim;
  return {
    source: (s) => transformedTensors(s, (name) => (name === qkv.v || name === vBias ? (t) => padRows(t, scale) : name === o ? padColumns : null)),
    checkpointShape: (p) => {
      if (p.name === qkv.v || p.name === vBias) return { ...p, shape: [narrowed(p.shape[0]), ...p.shape.slice(1)] };
      return p.name === o ? { ...p, shape: [p.shape[0], narrowed(p.shape[1])] } : p;
    },
  };
}

/** SelfAttentionOptions.projectedGate: the gate's projection, its width and its activation. */
export interface ProjectedGate {
  name: string;
  perHead: boolean;
  activation: 'sigmoid' | 'softplus';
}

/** The projection of a projected gate (SelfAttentionOptions.projectedGate): column-parallel by query heads, unless the attention is replicated. */
function projectedGateLinear(options: SelfAttentionOptions, gate: ProjectedGate, replicated: boolean): Linear {
  const { numHeads, numKvHeads, headDim, hiddenSize } = options;
  const width = gate.perHead ? 1 : headDim;
  const inFeatures = options.inputSize ?? hiddenSize;
  if (replicated) return Linear.single(gate.name, numHeads * width, inFeatures, 'replicated', false);
  const shardRows = (_index: number, shard: TensorParallelShard): RowRange[] => {
    const { q } = attentionHeadShard(numHeads, numKvHeads, shard);
    return [{ start: q.start * width, count: q.count * width }];
  };
  return new Linear({ parts: [{ name: gate.name, rows: numHeads * width }], inFeatures, bias: false, shard: 'column', shardRows });
}

/** q/k/v projection (one matmul, or three with projection norms), the paged attention core, and the output projection. */
export class SelfAttention implements Layer {
  readonly core: PagedAttention;
  /** The fused q/k/v projection, or with projection norms q, k and v apiece. */
  private readonly projections: Linear[];
  private readonly projectionNorm: { q: ProjectionNorm; k: ProjectionNorm } | null;
  private readonly o: Linear;
  /** The output gate's rows of the query projection, or null (`SelfAttentionOptions.outputGate`). */
  private readonly gate: Linear | null;
  /** The gate's own projection and activation, or null (`SelfAttentionOptions.projectedGate`). */
  private readonly projectedGate: { linear: Linear; activation: ProjectedGate['activation'] } | null;
  private readonly gatedQuery: string | null;
  private readonly headDim: number;
  /** Per tensor, the checkpoint row each loaded row of q_proj and k_proj reads, and element of a projection norm's weight (`interleavedRope`), or null. */
  private readonly ropeOrder: ReturnType<typeof rotaryRowOrder> | null;
  /** v_proj and o_proj padded to whole heads (`narrowValues`), or null. */
  private readonly narrowValues: ReturnType<typeof narrowValueTensors> | null;

  constructor(options: SelfAttentionOptions) {
    // The fp8 KV scales sit beside the projections: `self_attn.k_scale` (vLLM, llm-compressor) or
    // the older `self_attn.k_proj.output_scale` (compressed-tensors, AutoFP8).
    const module = options.o.replace(/\.[^.]+\.weight$/, '');
    this.projectionNorm = options.projectionNorm ?? null;
    const replicated = this.projectionNorm !== null;
    this.core = new PagedAttention({
      ...options,
      kvScaleNames: options.kvScaleNames ?? {
        k: [`${module}.k_scale`, `${module}.k_proj.output_scale`],
        v: [`${module}.v_scale`, `${module}.v_proj.output_scale`],
      },
      replicatedHeads: replicated,
    });
    const { numHeads, numKvHeads, headDim, hiddenSize, qkv } = options;
    const parts =
      'qkv' in qkv
        ? [{ name: qkv.qkv, rows: (numHeads + 2 * numKvHeads) * headDim }]
        : [
            { name: qkv.q, rows: numHeads * headDim },
            { name: qkv.k, rows: numKvHeads * headDim },
            { name: qkv.v, rows: numKvHeads * headDim },
          ];
    const inFeatures = options.inputSize ?? hiddenSize;
    if (replicated) {
      if ('qkv' in qkv || options.outputGate === true) throw new Error(`${options.o}: projection norms read q and k as separate projections, without an output gate`);
      this.projections = parts.map((part) => new Linear({ parts: [part], inFeatures, bias: options.qkvBias, shard: 'replicated' }));
    } else {
      // A shard's rows of each part: its query heads, and its key and value heads.
      const shardRows = (index: number, shard: TensorParallelShard): RowRange[] => {
        const { q, kv } = attentionHeadShard(numHeads, numKvHeads, shard);
        const rows = (first: number, heads: { start: number; count: number }) => ({ start: (first + heads.start) * headDim, count: heads.count * headDim });
        if ('qkv' in qkv) return [rows(0, q), rows(numHeads, kv), rows(numHeads + numKvHeads, kv)];
        return [index === 0 ? rows(0, q) : rows(0, kv)];
      };
      this.projections = [new Linear({ parts, inFeatures, bias: options.qkvBias, shard: 'column', shardRows })];
    }
    this.o = Linear.single(options.o, hiddenSize, numHeads * headDim, replicated ? 'replicated' : 'row', options.oBias);
    this.headDim = headDim;
    this.gatedQuery = options.outputGate === true && !('qkv' in qkv) ? qkv.q : null;
    if (options.outputGate === true && this.gatedQuery === null) throw new Error('an attention output gate is read from a separate q_proj, not a fused qkv projection');
    this.gate = this.gatedQuery === null ? null : Linear.single(this.gatedQuery, numHeads * headDim, options.inputSize ?? hiddenSize, 'column', options.qkvBias);
    const gate = options.projectedGate;
    this.projectedGate = gate == null ? null : { linear: projectedGateLinear(options, gate, replicated), activation: gate.activation };
    this.ropeOrder = options.interleavedRope === true ? rotaryRowOrder(options, interleavedRow) : options.reversedRope === true ? rotaryRowOrder(options, swappedHalvesRow) : null;
    this.narrowValues = options.narrowValues == null ? null : narrowValueTensors(options, options.narrowValues);
  }

  /** `source` with the gated query projection read as its query rows (for qkv) or its gate rows (for gate). */
  private gatedQueryRows(source: WeightSource, half: 0 | 1): WeightSource {
    const name = this.gatedQuery!;
    const { headDim } = this;
    // Head h's rows: its query (2h · headDim ..), then its gate.
    const row = (r: number) => (2 * Math.floor(r / headDim) + half) * headDim + (r % headDim);
    const selection = { count: this.gate!.outFeatures, row };
    return selectedRows(source, { [name]: selection, [name.replace(/\.weight$/, '.bias')]: selection });
  }

  get kvSpec(): AttentionKvSpec {
    return this.core.kvSpec;
  }

  useSparseAttention(sparse: SparseAttention): void {
    this.core.useSparseAttention(sparse);
  }

  get decodeSelection(): DecodeSelection | null {
    return this.core.decodeSelection;
  }

  get macsPerKey(): number {
    return this.core.macsPerKey;
  }

  private get sublayers(): Layer[] {
    const norms = this.projectionNorm === null ? [] : [this.projectionNorm.q, this.projectionNorm.k];
    return [...this.projections, ...norms, this.core, ...(this.projectedGate === null ? [] : [this.projectedGate.linear]), this.o];
  }

  parameters(): ParameterSpec[] {
    const narrow = this.narrowValues;
    const params = narrow === null ? parametersOf(this.sublayers) : parametersOf(this.sublayers).map(narrow.checkpointShape);
    if (this.gate === null) return params;
    // The checkpoint's query projection holds the gate's rows too.
    const gated = new Set(this.gate.parameters().map((p) => p.name));
    return params.map((p) => (gated.has(p.name) ? { ...p, shape: [2 * p.shape[0], ...p.shape.slice(1)] } : p));
  }

  load(checkpoint: WeightSource, uploader: WeightUploader): void {
    const padded = this.narrowValues === null ? checkpoint : this.narrowValues.source(checkpoint);
    const source = this.ropeOrder === null ? padded : withPermutedElements(withPermutedRows(padded, this.ropeOrder.rows), this.ropeOrder.elements);
    if (this.gate === null) {
      loadLayers(this.sublayers, source, uploader);
      return;
    }
    // A gated query projection is the fused one: projections holds it alone. Under tensor
    // parallelism each reads its shard's heads from these rows, as from a plain q_proj.
    this.projections[0].load(this.gatedQueryRows(source, 0), uploader);
    this.gate.load(this.gatedQueryRows(source, 1), uploader);
    loadLayers([this.core, this.o], source, uploader);
  }

  /** The projections; with interleaved RoPE, the q/k adapters' B rows permuted as q_proj's and k_proj's rows are. */
  loraTargets(): LoraTarget[] {
    const rows = this.ropeOrder?.rows ?? null;
    return [...(rows === null ? this.projections : this.projections.map((p) => withPermutedLoraRows(p, rows))), this.o];
  }

  forward(b: Backend, x: Tensor, step: StepInputs, cache: KvCache): Tensor {
    const heads = this.core.forward(b, this.project(b, x, step), step, cache);
    const gated =
      this.gate !== null ? b.multiplyGate(heads, this.gate.forward(b, x), 'sigmoid')
      : this.projectedGate !== null ? b.multiplyGate(heads, this.projectedGate.linear.forward(b, x), this.projectedGate.activation)
      : heads;
    const out = this.o.forwardWithLora(b, gated, step);
    // A replicated output projection is whole on every device: nothing to sum.
    return this.projectionNorm === null ? b.allReduce(out) : out;
  }

  /** The packed [numTokens, (numHeads + 2 · numKvHeads) · headDim] rows the core reads: q, k, v side by side. */
  private project(b: Backend, x: Tensor, step: StepInputs): Tensor {
    if (this.projectionNorm === null) return this.projections[0].forwardWithLora(b, x, step);
    const [q, k, v] = this.projections.map((p) => p.forwardWithLora(b, x, step));
    return b.concatColumns([this.projectionNorm.q.forward(b, q), this.projectionNorm.k.forward(b, k), v]);
  }
}
