import type { Backend, LoraSliceValues, LoraWeights, StepInputs, Tensor } from '../backend/backend.ts';
import type { LoraAdapter } from '../tensor/lora-adapter.ts';
import { invalidArgument } from '../errors.ts';
import { hostTensorToFloat32 } from '../tensor/host-dtype.ts';
import type { HostTensor } from '../tensor/host-tensor.ts';
import { concatRows, float32Tensor } from '../tensor/host-ops.ts';
import { concatQuantizedRows, dequantizeWeight, isQuantized, stackingProblem, type LinearWeight, type QuantizedWeight } from '../tensor/quantized-weight.ts';
import { concatSparse24Rows, expandSparse24, isSparse24, type Sparse24Weight } from '../tensor/sparse24.ts';
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
   * dequantized at load): the LM head and MoE routers, which vLLM also leaves unquantized.
   */
  dense?: boolean;
  /** The output in float32 on every backend, not the activation dtype (an MoE router's logits). */
  float32Output?: boolean;
  /**
   * For a column-parallel layer, the rows of part `index` that a shard holds, in order; default:
   * its equal part of the part's rows. Attention overrides it (key/value heads replicated when
   * fewer than the devices; a fused q/k/v tensor's three parts).
   */
  shardRows?: (index: number, shard: TensorParallelShard) => RowRange[];
}

/** Rows start .. start + count - 1. */
export interface RowRange {
  start: number;
  count: number;
}

/**
 * y = x · Wᵀ (+ b). Projections that read the same input are stacked into one weight at load time
 * (q/k/v, gate/up), so each costs one matmul. The weight's format is the source's (`readLinear`):
 * 16-bit, or quantized (src/tensor/quantized-weight.ts), chosen per layer by what the checkpoint
 * holds for it (its ignore lists, vLLM's per-layer quant_method) or by `--quantization`, or 2:4
 * sparse (src/tensor/sparse24.ts, `--sparsity 2:4`); the backend's `linear` multiplies by each.
 */
export class Linear implements Layer {
  readonly parts: readonly LinearPart[];
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly hasBias: boolean;
  readonly shard: ShardAxis;
  private readonly dense: boolean;
  private readonly float32Output: boolean;
  private readonly shardRows: (index: number, shard: TensorParallelShard) => RowRange[];
  private weightTensor: Tensor | null = null;
  private biasTensor: Tensor | null = null;
  private lora: LoraWeights | null = null;
  /** A row-parallel layer's bias is added on one device only. */
  private biasOnThisDevice = true;

  constructor(options: LinearOptions) {
    this.parts = options.parts;
    this.inFeatures = options.inFeatures;
    this.outFeatures = options.parts.reduce((n, p) => n + p.rows, 0);
    this.hasBias = options.bias;
    this.shard = options.shard;
    this.dense = options.dense ?? false;
    this.float32Output = options.float32Output ?? false;
    this.shardRows = options.shardRows ?? ((index, shard) => [evenPart(this.parts[index].rows, shard, `the rows of ${this.parts[index].name}`)]);
  }

  /** A layer reading one checkpoint tensor `name` of shape [rows, inFeatures]. */
  static single(name: string, rows: number, inFeatures: number, shard: ShardAxis, bias = false): Linear {
    return new Linear({ parts: [{ name, rows }], inFeatures, bias, shard });
  }

  parameters(): ParameterSpec[] {
    const weights = this.parts.map((p) => ({ name: p.name, shape: [p.rows, this.inFeatures] }));
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
    if (shard.size === 1 || this.shard === 'replicated') {
      const read = this.dense || source.readLinear === undefined ? source.read : source.readLinear;
      this.weightTensor = uploadStacked(this.parts.map((p) => read.call(source, p.name)), uploader);
      if (this.hasBias) this.biasTensor = uploader.loadWeight(concatRows(this.parts.map((p) => source.read(biasName(p.name)))));
      return;
    }
    if (!this.dense && source.readLinear !== undefined) {
      throw invalidArgument(`tensor parallelism over quantized or 2:4 sparse weights is not supported yet (${this.parts[0].name}): run a 16-bit checkpoint without --quantization or --sparsity`);
    }
    if (this.shard === 'column') {
      const rows = this.parts.map((_, i) => this.shardRows(i, shard));
      this.weightTensor = uploader.loadWeight(concatRows(this.parts.map((p, i) => readRowRanges(source, p.name, rows[i]))));
      if (this.hasBias) this.biasTensor = uploader.loadWeight(concatRows(this.parts.map((p, i) => readRowRanges(source, biasName(p.name), rows[i]))));
      return;
    }
    const columns = evenPart(this.inFeatures, shard, `the input columns of ${this.parts[0].name}`);
    this.weightTensor = uploader.loadWeight(concatRows(this.parts.map((p) => readSlice(source, p.name, { dim: 1, ...columns }))));
    this.biasOnThisDevice = shard.rank === 0;
    if (this.hasBias && this.biasOnThisDevice) this.biasTensor = uploader.loadWeight(concatRows(this.parts.map((p) => source.read(biasName(p.name)))));
  }

  /** The stacked [outFeatures, inFeatures] weight on the device. */
  get weight(): Tensor {
    return loaded(this.weightTensor, this.parts[0].name);
  }

  /** The stacked bias [outFeatures] on the device, or null for a layer without one. */
  get bias(): Tensor | null {
    return this.hasBias && this.biasOnThisDevice ? loaded(this.biasTensor, `${this.parts[0].name} bias`) : null;
  }

  forward(b: Backend, x: Tensor): Tensor {
    return b.linear(x, this.weight, this.bias, { float32: this.float32Output });
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
 * The parts stacked along their rows in one format: all 16-bit, all quantized alike, or all 2:4
 * sparse. Parts in different formats (a GGUF K-quant mix stores some layers' v_proj in Q6_K, which
 * Keel dequantizes, beside q/k_proj in Q4_K, which it repacks) are all stacked 16-bit, as their
 * exact values: one matmul takes one format.
 */
function uploadStacked(weights: LinearWeight[], uploader: WeightUploader): Tensor {
  const kind = (w: LinearWeight) => (isQuantized(w) ? 'quantized' : isSparse24(w) ? '2:4 sparse' : '16-bit');
  const kinds = weights.map(kind);
  const mixed = kinds.some((k) => k !== kinds[0]) || (kinds[0] === 'quantized' && stackingProblem(weights as QuantizedWeight[]) !== null);
  if (mixed) return uploader.loadWeight(concatRows(weights.map(asHostTensor)));
  if (kinds[0] === 'quantized') return uploader.loadQuantizedWeight(concatQuantizedRows(weights as QuantizedWeight[]));
  if (kinds[0] === '2:4 sparse') return uploader.loadSparseWeight(concatSparse24Rows(weights as Sparse24Weight[]));
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
