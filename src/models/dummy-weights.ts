import type { Checkpoint } from '../checkpoint/checkpoint.ts';
import type { Layer, WeightUploader } from '../layers/parameters.ts';
import { forkStream } from '../sampling/rng.ts';
import { DTYPE_BYTES, float32ToHostTensor } from '../tensor/host-dtype.ts';
import type { HostTensor, WeightDType } from '../tensor/host-tensor.ts';
import { loadWeights } from './load-weights.ts';

/**
 * Random weights of the shapes a model's layers ask for, in `dtype`, for `--load-format dummy`
 * benchmarks. They go through the same loading as a real checkpoint (q/k/v and gate/up merging,
 * load-time format changes), one tensor at a time, so host memory never holds more than a layer's worth.
 */
export function loadDummyWeights(model: Layer, dtype: WeightDType, uploader: WeightUploader, seed: number): void {
  loadWeights(model, new RandomCheckpoint(model, dtype, seed), uploader);
}

/**
 * Random values are drawn for a pool of this many elements and the pool is tiled over larger
 * tensors: drawing 8B values one by one would dominate a benchmark's start-up. The length is odd,
 * so rows of a power-of-two width each start at a different place in the pool.
 */
const POOL_ELEMENTS = (1 << 20) + 1;
const BIAS_RANGE = 0.02;

class RandomCheckpoint implements Checkpoint {
  readonly dir = '<dummy weights>';
  private readonly shapes: Map<string, number[]>;
  /** Each tensor draws from its own stream, so its values do not depend on load order. */
  private readonly streamOf: Map<string, number>;
  private readonly dtype: WeightDType;
  private readonly seed: number;

  constructor(model: Layer, dtype: WeightDType, seed: number) {
    this.dtype = dtype;
    this.seed = seed;
    this.shapes = new Map(model.parameters().map(({ name, shape }) => [name, shape]));
    this.streamOf = new Map([...this.shapes.keys()].map((name, i) => [name, i]));
  }

  get tensorNames(): string[] {
    return [...this.shapes.keys()];
  }

  has(name: string): boolean {
    return this.shapes.has(name);
  }

  info(name: string): { dtype: string; shape: number[] } {
    return { dtype: this.dtype.toUpperCase(), shape: this.shape(name) };
  }

  read(name: string): HostTensor {
    const shape = this.shape(name);
    const elements = shape.reduce((a, b) => a * b, 1);
    const pool = new Float32Array(Math.min(elements, POOL_ELEMENTS));
    if (name.endsWith('norm.weight')) {
      pool.fill(1);
    } else {
      // Uniform in ±1/sqrt(fan_in) keeps each projection's output on the scale of its input, so
      // activations stay finite through any depth; 1-D biases get a small fixed range. Matrices
      // are [out, in] and stacked experts [experts, out, in] or [experts, in, out]: dimension 1
      // is near enough to fan_in for a benchmark's values.
      const range = shape.length >= 2 ? 1 / Math.sqrt(shape[1]) : BIAS_RANGE;
      const rng = forkStream(this.seed, this.streamOf.get(name) ?? 0);
      for (let i = 0; i < pool.length; i++) pool[i] = (rng.nextUint32() / 2 ** 31 - 1) * range;
    }
    const encoded = float32ToHostTensor(pool, this.dtype, [pool.length]).data;
    const data = new Uint8Array(elements * DTYPE_BYTES[this.dtype]);
    for (let offset = 0; offset < data.length; offset += encoded.length) {
      data.set(encoded.subarray(0, Math.min(encoded.length, data.length - offset)), offset);
    }
    return { dtype: this.dtype, shape, data };
  }

  close(): void {}

  private shape(name: string): number[] {
    const shape = this.shapes.get(name);
    if (!shape) throw new Error(`dummy weights have no tensor "${name}"`);
    return shape.slice();
  }
}
