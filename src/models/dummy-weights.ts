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
import { DUMMY_ONLY_QUANTIZATIONS, LINEAR_QUANTIZATIONS, roundToNearestLayout, type LinearQuantization, type LoadTimeQuantization } from '../tensor/quantize-rtn.ts';
import { AQLM_GROUP, aqlmLayout, fillInt4Padding, FP8_E4M3_MAX, isAqlm, isFourBit, type AqlmFormat, type QuantizedWeight } from '../tensor/quantized-weight.ts';
import { emptyAqlmWeight } from '../tensor/aqlm.ts';
import { invalidArgument } from '../errors.ts';

/**
 * Random weights of the shapes a model's layers ask for, in `dtype`, for `--load-format dummy`
 * benchmarks. They go through the same loading as a real checkpoint (q/k/v and gate/up merging,
 * load-time format changes), one tensor at a time, so host memory never holds more than a layer's worth.
 * `quantization` quantizes their linear layers (or MoE experts) as `--quantization` does a checkpoint's,
 * except that linear layers draw random codes straight into the quantized layout (same format,
 * groups and zero points) instead of quantizing random floats: quantizing an 8B model's values on
 * the host took minutes, drawing its codes takes as long as copying them. The AQLM layouts
 * (aqlm-2x8, aqlm-1x16) are drawn so too, codes and float16 codebooks alike: dummy weights are the
 * only ones --quantization makes in them (a real checkpoint's take AQLM's search).
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
  const linear = [...LINEAR_QUANTIZATIONS, ...DUMMY_ONLY_QUANTIZATIONS].find((m) => m === quantization) ?? null;
  const random = new RandomCheckpoint(model, dtype, seed, linear);
  const ckpt = sparsity !== null ? magnitudePruned(random, sparsity) : linear !== null ? random : withQuantization(random, null, quantization);
  loadWeights(model, ckpt, uploader, shard && { shard });
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

/** The layouts dummy weights draw their linear layers' codes in. */
type DrawnQuantization = LinearQuantization | AqlmFormat;

/** Fills `into` from `pool`, starting at `from` and going round the pool as often as it takes; returns `into`. */
function tile<T extends Uint8Array | Float32Array>(pool: T, from: number, into: T): T {
  for (let offset = 0; offset < into.length; ) {
    const n = Math.min(pool.length - from, into.length - offset);
    into.set(pool.subarray(from, from + n), offset);
    offset += n;
    from = 0;
  }
  return into;
}

class RandomCheckpoint implements Checkpoint {
  readonly dir = '<dummy weights>';
  private readonly shapes: Map<string, number[]>;
  /** Where each tensor starts in the pool: its values do not depend on load order. */
  private readonly startOf: Map<string, number>;
  private readonly dtype: WeightDType;
  private readonly unit: Float32Array;
  /** The pool scaled to each range in use, encoded in the dtype. */
  private readonly encodedPools = new Map<number, Uint8Array>();
  /** Random code bytes for quantized linear layers (every byte a valid code of the method), or null. */
  private readonly codePool: Uint8Array | null;
  private readonly linearQuantization: DrawnQuantization | null;
  /** The unit pool rounded to float16, AQLM codebooks' values (made on first use). */
  private halfUnit: Float32Array | null = null;
  /** Present (as a checkpoint's own readLinear) only with a linear quantization. */
  readonly readLinear?: (name: string) => QuantizedWeight;

  constructor(model: Layer, dtype: WeightDType, seed: number, linearQuantization: DrawnQuantization | null) {
    this.dtype = dtype;
    this.linearQuantization = linearQuantization;
    this.shapes = new Map(model.parameters().map(({ name, shape }) => [name, shape]));
    const starts = forkStream(seed, 0);
    this.startOf = new Map([...this.shapes.keys()].map((name) => [name, starts.nextUint32() % POOL_ELEMENTS]));
    const rng = forkStream(seed, 1);
    this.unit = Float32Array.from({ length: POOL_ELEMENTS }, () => rng.nextUint32() / 2 ** 31 - 1);
    this.codePool = null;
    if (linearQuantization !== null) {
      const codes = forkStream(seed, 2);
      // e4m3's NaN codes (0x7f, 0xff) become the largest finite ones.
      const fp8 = linearQuantization === 'fp8';
      this.codePool = Uint8Array.from({ length: POOL_ELEMENTS }, () => {
        const b = codes.nextUint32() & 0xff;
        return fp8 && (b & 0x7f) === 0x7f ? b - 1 : b;
      });
      this.readLinear = (name) => this.randomQuantized(name);
    }
  }

  /**
   * Random codes in the layout --quantization makes (roundToNearestLayout), tiled from the code
   * pool as read() tiles values, with scales that spread them over ±1/sqrt(fan_in) as read()'s
   * values are: int4 codes 0..15 about their zero 8, int8 0..255 about 128, fp8 up to ±448, nf4 ±1.
   */
  private randomQuantized(name: string): QuantizedWeight {
    const method = this.linearQuantization!;
    if (isAqlm(method)) return this.randomAqlm(name, method);
    const [rows, cols] = this.shape(name);
    const w = roundToNearestLayout(rows, cols, method);
    tile(this.codePool!, this.startOf.get(name) ?? 0, w.codes);
    const range = 1 / Math.sqrt(cols);
    const half = isFourBit(w.format) ? (method === 'nf4' ? 1 : 8) : method === 'fp8' ? FP8_E4M3_MAX : 128;
    w.scales.fill(range / half);
    w.zeros?.fill(8);
    fillInt4Padding(w);
    return w;
  }

  /**
   * Random AQLM code words (every byte pair is one in either layout) and codebooks of float16
   * values in ±1, tiled from the pools from the tensor's own place; each row's scale maps its sums
   * of codebook vectors (within ±codebooks) into ±1/sqrt(fan_in), as read()'s values are.
   */
  private randomAqlm(name: string, format: AqlmFormat): QuantizedWeight {
    const [rows, cols] = this.shape(name);
    if (cols % AQLM_GROUP !== 0) throw invalidArgument(`--quantization ${format}: ${name} has ${cols} input columns, not a multiple of ${AQLM_GROUP} (AQLM codes groups of ${AQLM_GROUP} columns)`);
    const { codebooks, size } = aqlmLayout(format);
    const start = this.startOf.get(name) ?? 0;
    this.halfUnit ??= hostTensorToFloat32(float32ToHostTensor(this.unit, 'f16', [POOL_ELEMENTS]));
    const w = emptyAqlmWeight(format, rows, cols, tile(this.halfUnit, start, new Float32Array(codebooks * size * AQLM_GROUP)));
    tile(this.codePool!, start, w.codes);
    w.scales.fill(1 / Math.sqrt(cols) / codebooks);
    return w;
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
    const elementBytes = DTYPE_BYTES[this.dtype];
    const data = tile(this.encodedPool(range), (this.startOf.get(name) ?? 0) * elementBytes, new Uint8Array(elements * elementBytes));
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
