import type { KvCache, Tensor } from '../backend.ts';
import type { KvCacheSpec } from '../../engine/batch.ts';

/** The CPU backend's tensor: row-major float32 values in `data`, exactly `shape`'s element count. */
export class CpuTensor implements Tensor {
  readonly shape: readonly number[];
  readonly data: Float32Array;

  constructor(shape: readonly number[], data: Float32Array) {
    if (data.length !== elementCount(shape)) {
      throw new Error(`CpuTensor: ${data.length} values do not fill shape [${shape.join(', ')}]`);
    }
    this.shape = shape;
    this.data = data;
  }

  static zeros(shape: readonly number[]): CpuTensor {
    return new CpuTensor(shape, new Float32Array(elementCount(shape)));
  }

  /** Rows and columns of a 2-D tensor. */
  get rows(): number {
    return this.shape[0];
  }

  get cols(): number {
    return this.shape[1];
  }
}

/** Rotary tables as uploaded: `cos`/`sin` are [maxPositions, headDim / 2]. */
export class CpuRopeTable implements Tensor {
  readonly shape: readonly number[];
  readonly headDim: number;
  readonly cos: Float32Array;
  readonly sin: Float32Array;

  constructor(headDim: number, cos: Float32Array, sin: Float32Array) {
    this.shape = [cos.length / (headDim / 2), headDim / 2];
    this.headDim = headDim;
    this.cos = cos;
    this.sin = sin;
  }

  get maxPositions(): number {
    return this.shape[0];
  }
}

/** Paged K and V pools, one Float32Array per layer each, laid out [numBlocks, blockSize, numKvHeads, headDim]. */
export class CpuKvCache implements KvCache {
  readonly spec: KvCacheSpec;
  readonly keys: Float32Array[];
  readonly values: Float32Array[];

  constructor(spec: KvCacheSpec) {
    this.spec = spec;
    const perLayer = spec.numBlocks * spec.blockSize * spec.numKvHeads * spec.headDim;
    this.keys = Array.from({ length: spec.numLayers }, () => new Float32Array(perLayer));
    this.values = Array.from({ length: spec.numLayers }, () => new Float32Array(perLayer));
  }
}

function elementCount(shape: readonly number[]): number {
  return shape.reduce((n, d) => n * d, 1);
}

// A tensor from another backend reaching CPU ops is a wiring bug, not a user error.
export function asCpuTensor(t: Tensor, what: string): CpuTensor {
  if (!(t instanceof CpuTensor)) throw new Error(`CpuBackend: ${what} is not a CPU tensor`);
  return t;
}

export function asCpuRopeTable(t: Tensor): CpuRopeTable {
  if (!(t instanceof CpuRopeTable)) throw new Error('CpuBackend: rope is not a table from uploadRopeTable');
  return t;
}

export function asCpuKvCache(c: KvCache): CpuKvCache {
  if (!(c instanceof CpuKvCache)) throw new Error('CpuBackend: cache is not from createKvCache');
  return c;
}
