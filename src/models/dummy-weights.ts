import type { Checkpoint } from '../checkpoint/checkpoint.ts';
import type { RawTensor } from '../checkpoint/safetensors.ts';
import type { Layer, TensorParallelShard, WeightUploader } from '../layers/parameters.ts';
import { forkStream } from '../sampling/rng.ts';
import { DTYPE_BYTES, float32ToHostTensor, hostTensorToFloat32 } from '../tensor/host-dtype.ts';
import type { HostTensor, WeightDType } from '../tensor/host-tensor.ts';
import { loadWeights } from './load-weights.ts';
import { withQuantization } from './model-checkpoint.ts';
import type { LinearWeight } from '../tensor/quantized-weight.ts';
import { compressSparse24 } from '../tensor/sparse24.ts';
import { sparsityCovers, type CheckpointSparsity } from '../checkpoint/sparsity-config.ts';
import { prune24 } from '../tensor/prune24.ts';
import type { LoadTimeQuantization } from '../tensor/quantize-rtn.ts';

/**
 * Random weights of the shapes a model's layers ask for, in `dtype`, for `--load-format dummy`
 * benchmarks. They go through the same loading as a real checkpoint (q/k/v and gate/up merging,
 * load-time format changes), one tensor at a time, so host memory never holds more than a layer's worth.
 * `quantization` quantizes their linear layers (or MoE experts) as `--quantization` does a checkpoint's;
 * `sparsity` 2:4-prunes the linear layers it covers by magnitude and loads them sparse.
 */
export function loadDummyWeights(
  model: Layer,
  dtype: WeightDType,
  uploader: WeightUploader,
  seed: number,
  quantization: LoadTimeQuantization | null = null,
  shard?: TensorParallelShard,
  sparsity: CheckpointSparsity | null = null,
): void {
  const random = new RandomCheckpoint(model, dtype, seed);
  loadWeights(model, sparsity === null ? withQuantization(random, null, quantization) : magnitudePruned(random, sparsity), uploader, shard && { shard });
}

/** Random weights whose linear layers `sparsity` covers read 2:4-pruned by magnitude (as `keel prune` would) and compressed. */
function magnitudePruned(random: RandomCheckpoint, sparsity: CheckpointSparsity): Checkpoint {
  return Object.assign(random, {
    readLinear(name: string): LinearWeight {
      const t = random.read(name);
      if (!sparsityCovers(sparsity, name.slice(0, -'.weight'.length))) return t;
      return compressSparse24(float32ToHostTensor(prune24(hostTensorToFloat32(t), t.shape[0], t.shape[1], null), t.dtype, t.shape), name);
    },
  });
}

/**
 * Random values are drawn once, for a pool of this many elements, and every tensor is tiled from
 * it, starting at a place of its own: drawing values per tensor would dominate the start-up of a
 * benchmark with thousands of expert tensors (a 30B MoE model has 18,000 of a million values
 * each). The length is odd, so rows of a power-of-two width each start at a different place.
 */
const POOL_ELEMENTS = (1 << 20) + 1;
const BIAS_RANGE = 0.02;

class RandomCheckpoint implements Checkpoint {
  readonly dir = '<dummy weights>';
  private readonly shapes: Map<string, number[]>;
  /** Where each tensor starts in the pool: its values do not depend on load order. */
  private readonly startOf: Map<string, number>;
  private readonly dtype: WeightDType;
  private readonly unit: Float32Array;
  /** The pool scaled to each range in use, encoded in the dtype. */
  private readonly encodedPools = new Map<number, Uint8Array>();

  constructor(model: Layer, dtype: WeightDType, seed: number) {
    this.dtype = dtype;
    this.shapes = new Map(model.parameters().map(({ name, shape }) => [name, shape]));
    const starts = forkStream(seed, 0);
    this.startOf = new Map([...this.shapes.keys()].map((name) => [name, starts.nextUint32() % POOL_ELEMENTS]));
    const rng = forkStream(seed, 1);
    this.unit = Float32Array.from({ length: POOL_ELEMENTS }, () => rng.nextUint32() / 2 ** 31 - 1);
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
    // Uniform in ±1/sqrt(fan_in) keeps each projection's output on the scale of its input, so
    // activations stay finite through any depth; 1-D biases get a small fixed range; norms are one
    // (range 0 stands for them). Matrices are [out, in] and stacked experts [experts, out, in] or
    // [experts, in, out]: dimension 1 is near enough to fan_in for a benchmark's values.
    const range = name.endsWith('norm.weight') ? 0 : shape.length >= 2 ? 1 / Math.sqrt(shape[1]) : BIAS_RANGE;
    const pool = this.encodedPool(range);
    const elementBytes = DTYPE_BYTES[this.dtype];
    const data = new Uint8Array(elements * elementBytes);
    let from = (this.startOf.get(name) ?? 0) * elementBytes;
    for (let offset = 0; offset < data.length; ) {
      const n = Math.min(pool.length - from, data.length - offset);
      data.set(pool.subarray(from, from + n), offset);
      offset += n;
      from = 0;
    }
    return { dtype: this.dtype, shape, data };
  }

  readRaw(name: string): RawTensor {
    const t = this.read(name);
    return { dtype: t.dtype.toUpperCase(), shape: t.shape, data: t.data };
  }

  private encodedPool(range: number): Uint8Array {
    let pool = this.encodedPools.get(range);
    if (pool === undefined) {
      const values = range === 0 ? new Float32Array(POOL_ELEMENTS).fill(1) : this.unit.map((u) => u * range);
      pool = float32ToHostTensor(values, this.dtype, [POOL_ELEMENTS]).data;
      this.encodedPools.set(range, pool);
    }
    return pool;
  }

  close(): void {}

  private shape(name: string): number[] {
    const shape = this.shapes.get(name);
    if (!shape) throw new Error(`dummy weights have no tensor "${name}"`);
    return shape.slice();
  }
}
