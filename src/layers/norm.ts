import type { Backend, Tensor } from '../backend/backend.ts';
import { mapValues } from '../tensor/host-ops.ts';
import { float32ToHostTensor } from '../tensor/host-dtype.ts';
import { loaded, type Layer, type ParameterSpec, type WeightSource, type WeightUploader } from './parameters.ts';

/** A norm a decoder's residual stream runs through: of x, or of the residual after x is added to it in place. */
export interface ResidualNorm extends Layer {
  forward(b: Backend, x: Tensor): Tensor;
  /** residual += x; returns the norm of the new residual. */
  addAndForward(b: Backend, x: Tensor, residual: Tensor): Tensor;
}

/**
 * RMSNorm over `size` values: x / rms(x) · w. Gemma's variant multiplies by (1 + w) instead; its
 * weight is stored with the 1 added at load (`offset: 1`), so both run as the same op. A
 * `weightless` norm (Llama 4's L2 norm of queries and keys) has no checkpoint tensor: its weight
 * is ones.
 */
export class RmsNorm implements ResidualNorm {
  readonly name: string;
  readonly size: number;
  readonly eps: number;
  private readonly offset: number;
  private readonly weightless: boolean;
  private weightTensor: Tensor | null = null;

  /** `name` names the weight's tensor, or for a weightless norm the norm in errors. */
  constructor(name: string, size: number, eps: number, options: { offset?: 0 | 1; weightless?: boolean } = {}) {
    this.name = name;
    this.size = size;
    this.eps = eps;
    this.offset = options.offset ?? 0;
    this.weightless = options.weightless ?? false;
  }

  parameters(): ParameterSpec[] {
    return this.weightless ? [] : [{ name: this.name, shape: [this.size] }];
  }

  load(source: WeightSource, uploader: WeightUploader): void {
    if (this.weightless) {
      this.weightTensor = uploader.loadWeight(float32ToHostTensor(new Float32Array(this.size).fill(1), 'bf16', [this.size]));
      return;
    }
    const weight = source.read(this.name);
    const offset = this.offset;
    this.weightTensor = uploader.loadWeight(offset === 0 ? weight : mapValues(weight, (w) => w + offset));
  }

  get weight(): Tensor {
    return loaded(this.weightTensor, this.name);
  }

  forward(b: Backend, x: Tensor): Tensor {
    return b.rmsNorm(x, this.weight, this.eps);
  }

  /** residual += x; returns the norm of the new residual. */
  addAndForward(b: Backend, x: Tensor, residual: Tensor): Tensor {
    return b.addRmsNorm(x, residual, this.weight, this.eps);
  }
}

/**
 * LayerNorm without a bias (Cohere's), (x − mean) / √(var + eps) · w over groups of the last
 * dimension of its weight's `shape`: [size] for a norm of whole rows, [heads, headDim] for one
 * per head of a projection with each head's own weights (Cohere's q/k norms).
 */
export class BiaslessLayerNorm implements ResidualNorm {
  readonly name: string;
  readonly shape: readonly number[];
  readonly eps: number;
  private weightTensor: Tensor | null = null;

  /** `name` names the weight's tensor. */
  constructor(name: string, shape: readonly number[], eps: number) {
    this.name = name;
    this.shape = shape;
    this.eps = eps;
  }

  parameters(): ParameterSpec[] {
    return [{ name: this.name, shape: [...this.shape] }];
  }

  load(source: WeightSource, uploader: WeightUploader): void {
    this.weightTensor = uploader.loadWeight(source.read(this.name));
  }

  forward(b: Backend, x: Tensor): Tensor {
    return b.layerNorm(x, loaded(this.weightTensor, this.name), null, this.eps, this.shape[this.shape.length - 1]);
  }

  /** No op fuses the add into this norm: the add, then the norm. */
  addAndForward(b: Backend, x: Tensor, residual: Tensor): Tensor {
    b.addInto(residual, x, null);
    return this.forward(b, residual);
  }
}

/**
 * LayerNorm over `size` values, (x - mean) / sqrt(var + eps) · w + b: `name.weight` and
 * `name.bias`. A residual stream's norm (Jais 2's, through the backend's `layerNorm`), or parameters
 * an op fuses (DeepSeek-V3.2's indexer key norm, in `indexerRopeAndCacheWrite`).
 */
export class LayerNorm implements ResidualNorm {
  readonly name: string;
  readonly size: number;
  readonly eps: number;
  private tensors: { weight: Tensor; bias: Tensor } | null = null;

  constructor(name: string, size: number, eps: number) {
    this.name = name;
    this.size = size;
    this.eps = eps;
  }

  parameters(): ParameterSpec[] {
    return [
      { name: `${this.name}.weight`, shape: [this.size] },
      { name: `${this.name}.bias`, shape: [this.size] },
    ];
  }

  load(source: WeightSource, uploader: WeightUploader): void {
    this.tensors = { weight: uploader.loadWeight(source.read(`${this.name}.weight`)), bias: uploader.loadWeight(source.read(`${this.name}.bias`)) };
  }

  get weight(): Tensor {
    return loaded(this.tensors, this.name).weight;
  }

  get bias(): Tensor {
    return loaded(this.tensors, this.name).bias;
  }

  forward(b: Backend, x: Tensor): Tensor {
    return b.layerNorm(x, this.weight, this.bias, this.eps, this.size);
  }

  /** No op fuses the add into this norm: the add, then the norm. */
  addAndForward(b: Backend, x: Tensor, residual: Tensor): Tensor {
    b.addInto(residual, x, null);
    return this.forward(b, residual);
  }
}
