import type { Backend, Tensor } from '../backend/backend.ts';
import type { HostTensor } from '../tensor/host-tensor.ts';
import { concatRows } from '../tensor/host-ops.ts';
import { loaded, type Layer, type ParameterSpec, type WeightSource, type WeightUploader } from './parameters.ts';

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

/**
 * How a linear layer's weight is stored on the device and multiplied (vLLM's quant_method): a
 * weight format is one of these, chosen per layer, not an edit to every model.
 */
export interface LinearMethod {
  /** Puts the layer's stacked [out, in] weight on the device. */
  upload(weight: HostTensor, uploader: WeightUploader): Tensor;
  /** `float32`: the output in float32 (Backend.linear's option). */
  apply(b: Backend, x: Tensor, weight: Tensor, bias: Tensor | null, float32: boolean): Tensor;
}

/** 16-bit (or float32) weights, multiplied as they are. */
export const UNQUANTIZED: LinearMethod = {
  upload: (weight, uploader) => uploader.loadWeight(weight),
  apply: (b, x, weight, bias, float32) => b.linear(x, weight, bias, { float32 }),
};

export interface LinearOptions {
  /** Checkpoint tensors stacked along the output rows, in order (q, k, v; gate, up; or just one). */
  parts: LinearPart[];
  inFeatures: number;
  bias: boolean;
  shard: ShardAxis;
  method?: LinearMethod;
  /** The output in float32 on every backend, not the activation dtype (an MoE router's logits). */
  float32Output?: boolean;
}

/**
 * y = x · Wᵀ (+ b). Projections that read the same input are stacked into one weight at load time
 * (q/k/v, gate/up), so each costs one matmul.
 */
export class Linear implements Layer {
  readonly parts: readonly LinearPart[];
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly hasBias: boolean;
  readonly shard: ShardAxis;
  private readonly method: LinearMethod;
  private readonly float32Output: boolean;
  private weightTensor: Tensor | null = null;
  private biasTensor: Tensor | null = null;

  constructor(options: LinearOptions) {
    this.parts = options.parts;
    this.inFeatures = options.inFeatures;
    this.outFeatures = options.parts.reduce((n, p) => n + p.rows, 0);
    this.hasBias = options.bias;
    this.shard = options.shard;
    this.method = options.method ?? UNQUANTIZED;
    this.float32Output = options.float32Output ?? false;
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

  load(source: WeightSource, uploader: WeightUploader): void {
    this.weightTensor = this.method.upload(concatRows(this.parts.map((p) => source.read(p.name))), uploader);
    if (this.hasBias) this.biasTensor = uploader.loadWeight(concatRows(this.parts.map((p) => source.read(biasName(p.name)))));
  }

  /** The stacked [outFeatures, inFeatures] weight on the device. */
  get weight(): Tensor {
    return loaded(this.weightTensor, this.parts[0].name);
  }

  forward(b: Backend, x: Tensor): Tensor {
    return this.method.apply(b, x, this.weight, this.biasTensor, this.float32Output);
  }
}

function biasName(weightName: string): string {
  if (!weightName.endsWith('.weight')) throw new Error(`linear weight name ${weightName} does not end in .weight`);
  return `${weightName.slice(0, -'.weight'.length)}.bias`;
}
