import type { Backend, LoraSliceValues, LoraWeights, StepInputs, Tensor } from '../backend/backend.ts';
import type { LoraAdapter } from '../tensor/lora-adapter.ts';
import { invalidArgument } from '../errors.ts';
import { hostTensorToFloat32 } from '../tensor/host-dtype.ts';
import type { HostTensor } from '../tensor/host-tensor.ts';
import { concatRows, float32Tensor } from '../tensor/host-ops.ts';
import { concatQuantizedRows, dequantizeWeight, isQuantized, stackingProblem, type LinearWeight, type QuantizedWeight } from '../tensor/quantized-weight.ts';
import { concatSparse24Rows, expandSparse24, isSparse24, type Sparse24Weight } from '../tensor/sparse24.ts';
import { storedSize, type StoredSize } from '../tensor/stored-size.ts';
import { loaded, type Layer, type ParameterSpec, type TensorParallelShard, type WeightSource, type WeightUploader } from './parameters.ts';
import { evenPart, readRowRanges, readSlice, shardOf } from './shard.ts';

/**
 * How a linear layer would be split over tensor-parallel devices: `column` splits the output rows
 * (each device computes a slice of the outputs), `row` splits the input columns (each device
 * computes partial sums, all-reduced after), `replicated` keeps it whole everywhere.
 */
export type ShardAxis = 'column' | 'row' | 'replicated';

/** One checkpoint tensor stacked into a linear layer's weight: its name and output rows. */
export interface LinearPart {
  /** Checkpoint name of the weight, ending in `.weight`; its bias, if any, is the same name ending in `.bias`. */
  name: string;
  rows: number;
}

export interface LinearOptions {
  /** Checkpoint tensors stacked along the output rows, in order (q, k, v; gate, up; or just one). */
  parts: LinearPart[];
  inFeatures: number;
  bias: boolean;
  shard: ShardAxis;
  /**
   * Keep the weight 16-bit whatever the checkpoint or `--quantization` holds (a quantized one is
   * dequantized at load): MoE routers, which vLLM also leaves unquantized (and the LM head, a
   * `vocabulary` layer).
   */
  dense?: boolean;
  /**
   * The LM head: dense, except that a source storing vocabulary matrices quantized in a layout
   * Keel runs (`readVocabulary`: a GGUF file) gives it in that layout, loaded as a table
   * (`loadQuantizedWeight`'s `table`). Sharded over tensor-parallel devices it is 16-bit.
   */
  vocabulary?: boolean;
  /** The output in float32 on every backend, not the activation dtype (an MoE router's logits). */
  float32Output?: boolean;
  /**
   * For a column-parallel layer, the rows of part `index` that a shard holds, in order; default:
   * its equal part of the part's rows. Attention overrides it (key/value heads replicated when
   * fewer than the devices; a fused q/k/v tensor's three parts).
   */
  shardRows?: (index: number, shard: TensorParallelShard) => RowRange[];
  /**
   * Stack every part into one device weight even when the source holds them in different formats
   * (then all 16-bit, as their dequantized values), for a consumer that reads the stacked weight
   * itself rather than calling `forward`: an MoE's shared expert, which the `moe` op multiplies.
   * Default: parts in different formats run as separate matmuls (`split`).
   */
  oneMatmul?: boolean;
}

/** Rows start .. start + count - 1. */
export interface RowRange {
  start: number;
  count: number;
}

/** One matmul of a linear layer: a run of consecutive parts in one format, stacked along the rows. */
interface Matmul {
  weight: Tensor;
  bias: Tensor | null;
}

/**
 * y = x · Wᵀ (+ b). Projections that read the same input are stacked into one weight at load time
 * (q/k/v, gate/up), so each costs one matmul. The weight's format is the source's (`readLinear`):
 * 16-bit, or quantized (src/tensor/quantized-weight.ts), chosen per layer by what the checkpoint
 * holds for it (its ignore lists, vLLM's per-layer quant_method) or by `--quantization`, or 2:4
 * sparse (src/tensor/sparse24.ts, `--sparsity 2:4`); the backend's `linear` multiplies by each.
 * Parts the source holds in different formats (a GGUF K-quant mix's Q6_K v_proj beside Q4_K
 * q/k_proj; GPTQ or compressed-tensors parts of different bits or groups) each keep their own:
 * every run of consecutive parts in one format is one matmul, and their outputs are joined
 * column-wise into the stacked layout, so what follows (attention, the gated activation, LoRA)
 * sees the same [rows, outFeatures] as from one matmul.
 */
export class Linear implements Layer {
  readonly parts: readonly LinearPart[];
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly hasBias: boolean;
  readonly shard: ShardAxis;
  private readonly dense: boolean;
  private readonly vocabulary: boolean;
  private readonly float32Output: boolean;
  private readonly shardRows: (index: number, shard: TensorParallelShard) => RowRange[];
  private readonly oneMatmul: boolean;
  /** The loaded weight: one matmul, or one per run of parts in one format, in output order. */
  private matmuls: Matmul[] | null = null;
  /** What each part occupies on the device once loaded whole (ParameterSpec.stored); null before, or for a shard. */
  private stored: StoredSize[] | null = null;
  private lora: LoraWeights | null = null;

  constructor(options: LinearOptions) {
    this.parts = options.parts;
    this.inFeatures = options.inFeatures;
    this.outFeatures = options.parts.reduce((n, p) => n + p.rows, 0);
    this.hasBias = options.bias;
    this.shard = options.shard;
    this.vocabulary = options.vocabulary ?? false;
    this.dense = (options.dense ?? false) || this.vocabulary;
    this.float32Output = options.float32Output ?? false;
    this.shardRows = options.shardRows ?? ((index, shard) => [evenPart(this.parts[index].rows, shard, `the rows of ${this.parts[index].name}`)]);
    this.oneMatmul = options.oneMatmul ?? false;
  }

  /** A layer reading one checkpoint tensor `name` of shape [rows, inFeatures]. */
  static single(name: string, rows: number, inFeatures: number, shard: ShardAxis, bias = false): Linear {
    return new Linear({ parts: [{ name, rows }], inFeatures, bias, shard });
  }

  parameters(): ParameterSpec[] {
    const weights = this.parts.map((p, i) => ({ name: p.name, shape: [p.rows, this.inFeatures], ...(this.stored && { stored: this.stored[i] }) }));
    const biases = this.hasBias ? this.parts.map((p) => ({ name: biasName(p.name), shape: [p.rows] })) : [];
    return [...weights, ...biases];
  }

  /**
   * Reads the layer's shard (layers/shard.ts): all of it on one device or when replicated; a
   * column-parallel layer's rows of each part; a row-parallel layer's equal part of the input
   * columns, with the bias on rank 0 alone (the all-reduce after it adds it once).
   */
  load(source: WeightSource, uploader: WeightUploader): void {
    const shard = shardOf(source);
    const biases = (read: (name: string, index: number) => HostTensor) => (this.hasBias ? this.parts.map((p, i) => read(biasName(p.name), i)) : null);
    if (shard.size === 1 || this.shard === 'replicated') {
      const read = this.vocabulary && source.readVocabulary !== undefined ? source.readVocabulary : this.dense || source.readLinear === undefined ? source.read : source.readLinear;
      const weights = this.parts.map((p) => read.call(source, p.name));
      this.matmuls = this.upload(weights, biases((name) => source.read(name)), uploader);
      // A oneMatmul layer whose parts come in different formats holds them all 16-bit (uploadStacked).
      this.stored = this.oneMatmul && formatRuns(weights).length > 1 ? this.parts.map((p) => ({ elements: p.rows * this.inFeatures, bytes: 0 })) : weights.map(storedSize);
      return;
    }
    if (!this.dense && source.readLinear !== undefined) {
      throw invalidArgument(`tensor parallelism over quantized or 2:4 sparse weights is not supported yet (${this.parts[0].name}): run a 16-bit checkpoint without --quantization or --sparsity`);
    }
    // Sharded layers are 16-bit (above), so one matmul.
    if (this.shard === 'column') {
      const rows = this.parts.map((_, i) => this.shardRows(i, shard));
      const readRows = (name: string, index: number) => readRowRanges(source, name, rows[index]);
      this.matmuls = this.upload(this.parts.map((p, i) => readRows(p.name, i)), biases(readRows), uploader);
      return;
    }
    const columns = evenPart(this.inFeatures, shard, `the input columns of ${this.parts[0].name}`);
    // A row-parallel layer's bias is added on rank 0 alone: the all-reduce after it adds it once.
    this.matmuls = this.upload(this.parts.map((p) => readSlice(source, p.name, { dim: 1, ...columns })), shard.rank === 0 ? biases((name) => source.read(name)) : null, uploader);
  }

  /**
   * The parts' weights on the device: each run of consecutive parts in one format stacked into one
   * matmul with its biases, or with `oneMatmul` all of them in one (16-bit when their formats differ).
   */
  private upload(weights: LinearWeight[], biases: HostTensor[] | null, uploader: WeightUploader): Matmul[] {
    const runs = this.oneMatmul ? [weights.map((_, i) => i)] : formatRuns(weights);
    return runs.map((run) => ({
      weight: uploadStacked(run.map((i) => weights[i]), uploader, this.vocabulary),
      bias: biases === null ? null : uploader.loadWeight(concatRows(run.map((i) => biases[i]))),
    }));
  }

  /** Whether the parts run as several matmuls, one per run of parts in one format (then `weight` and `bias` are not one tensor). */
  get split(): boolean {
    return loaded(this.matmuls, this.parts[0].name).length > 1;
  }

  /** The stacked [outFeatures, inFeatures] weight on the device, for a layer that runs as one matmul. */
  get weight(): Tensor {
    return this.single.weight;
  }

  /** The stacked bias [outFeatures] on the device, or null for a layer without one (or a row-parallel shard other than rank 0's). */
  get bias(): Tensor | null {
    return this.single.bias;
  }

  private get single(): Matmul {
    const matmuls = loaded(this.matmuls, this.parts[0].name);
    if (matmuls.length > 1) throw new Error(`${this.parts[0].name}: its parts are in different formats and run as ${matmuls.length} matmuls, so there is no one stacked weight (construct it with oneMatmul)`);
    return matmuls[0];
  }

  forward(b: Backend, x: Tensor): Tensor {
    const outputs = loaded(this.matmuls, this.parts[0].name).map((m) => b.linear(x, m.weight, m.bias, { float32: this.float32Output }));
    return outputs.length === 1 ? outputs[0] : b.concatColumns(outputs);
  }

  /** The module names a PEFT adapter adapts here: each part's checkpoint name without `.weight`. */
  get loraModules(): string[] {
    return this.parts.map((p) => moduleName(p.name));
  }

  /** Zeroed LoRA weights for `slots` adapters of rank up to `maxRank`, each part a slice of its own. */
  enableLora(b: Backend, slots: number, maxRank: number): void {
    this.lora = b.createLoraWeights({ slots, maxRank, inFeatures: this.inFeatures, sliceRows: this.parts.map((p) => p.rows) });
  }

  /** Throws, naming the module, if the adapter's matrices for one of this layer's parts do not fit it. */
  checkLoraAdapter(adapter: LoraAdapter, what: string): void {
    this.parts.forEach((part) => {
      const module = adapter.modules.get(moduleName(part.name));
      if (module === undefined) return;
      const [rank, inFeatures] = module.a.shape;
      if (inFeatures !== this.inFeatures || module.b.shape[0] !== part.rows) {
        throw invalidArgument(`${what}: ${moduleName(part.name)} is [${part.rows}, ${this.inFeatures}] in the model, but the adapter's A is [${rank}, ${inFeatures}] and B [${module.b.shape.join(', ')}]`);
      }
    });
  }

  /** Puts the adapter's matrices (B scaled) in LoRA slot `slot`; zeros for the parts it leaves alone. */
  setLoraSlot(b: Backend, slot: number, adapter: LoraAdapter): void {
    const slices = this.parts.map((part): LoraSliceValues | null => {
      const module = adapter.modules.get(moduleName(part.name));
      if (module === undefined) return null;
      const bValues = hostTensorToFloat32(module.b);
      for (let i = 0; i < bValues.length; i++) bValues[i] *= adapter.scale;
      return { a: hostTensorToFloat32(module.a), b: bValues };
    });
    b.setLoraSlot(loaded(this.lora, `${this.parts[0].name}'s LoRA weights`), slot, adapter.rank, slices);
  }

  /** Whether this step adds LoRA deltas here: LoRA is enabled and some token of the step has an adapter. */
  loraActive(step: StepInputs): boolean {
    return this.lora !== null && step.batch.loraSlots !== null;
  }

  /** forward, plus each token's adapter delta when loraActive (Backend.addLora). */
  forwardWithLora(b: Backend, x: Tensor, step: StepInputs): Tensor {
    const out = this.forward(b, x);
    if (this.lora !== null && step.batch.loraSlots !== null) b.addLora(out, x, this.lora, step);
    return out;
  }
}

/** A linear weight's module name, as PEFT keys its adapters: the checkpoint name without `.weight`. */
function moduleName(weightName: string): string {
  return weightName.slice(0, -'.weight'.length);
}

/**
 * The parts' indices in runs of consecutive parts that stack into one matmul: all 16-bit, all
 * quantized alike (`stackingProblem`: format, group size, act-order, LLM.int8() threshold), or all
 * 2:4 sparse of one dtype. Runs, not groups: the matmuls' outputs are joined in part order, so q
 * and v in one format around a k in another run as three.
 */
function formatRuns(weights: readonly LinearWeight[]): number[][] {
  const runs: number[][] = [];
  weights.forEach((w, i) => {
    const run = runs.at(-1);
    if (run !== undefined && stackable(weights[run[0]], w)) run.push(i);
    else runs.push([i]);
  });
  return runs;
}

function stackable(a: LinearWeight, b: LinearWeight): boolean {
  if (isQuantized(a) || isQuantized(b)) return isQuantized(a) && isQuantized(b) && stackingProblem([a, b]) === null;
  if (isSparse24(a) || isSparse24(b)) return isSparse24(a) && isSparse24(b) && a.values.dtype === b.values.dtype;
  return true;
}

/**
 * The weights stacked along their rows as one device weight: in their format when they share one
 * (`formatRuns`), else (a `oneMatmul` layer's parts in different formats) all 16-bit, as their
 * exact values. `table`: a quantized LM head, loaded as a vocabulary table.
 */
function uploadStacked(weights: LinearWeight[], uploader: WeightUploader, table: boolean): Tensor {
  if (formatRuns(weights).length > 1) return uploader.loadWeight(concatRows(weights.map(asHostTensor)));
  const [first] = weights;
  if (isQuantized(first)) return uploader.loadQuantizedWeight(concatQuantizedRows(weights as QuantizedWeight[]), { table });
  if (isSparse24(first)) return uploader.loadSparseWeight(concatSparse24Rows(weights as Sparse24Weight[]));
  return uploader.loadWeight(concatRows(weights as HostTensor[]));
}

/** A linear weight's values as a host tensor: a 16-bit one as it is, a quantized or 2:4 one decoded (float32). */
function asHostTensor(w: LinearWeight): HostTensor {
  if (isQuantized(w)) return float32Tensor(dequantizeWeight(w), [w.rows, w.cols]);
  return isSparse24(w) ? expandSparse24(w) : w;
}

function biasName(weightName: string): string {
  if (!weightName.endsWith('.weight')) throw new Error(`linear weight name ${weightName} does not end in .weight`);
  return `${weightName.slice(0, -'.weight'.length)}.bias`;
}
