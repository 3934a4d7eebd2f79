import type { KvCache, StepInputs, Tensor } from '../backend.ts';
import type { BatchDescription, KvCacheSpec } from '../../engine/batch.ts';
import type { AttentionPlan } from './attention-plan.ts';
import type { DevicePtr } from './driver-api.ts';

/** Element type on the device: weights and activations are bf16, rope tables and readbacks f32. */
export type DeviceDType = 'bf16' | 'f32';

/** A row-major, contiguous device buffer. 1-D tensors (norm weights, biases) have one row. */
export class CudaTensor implements Tensor {
  readonly shape: readonly number[];
  readonly ptr: DevicePtr;
  readonly dtype: DeviceDType;

  constructor(shape: readonly number[], ptr: DevicePtr, dtype: DeviceDType) {
    this.shape = shape;
    this.ptr = ptr;
    this.dtype = dtype;
  }

  get rows(): number {
    return this.shape.length === 1 ? 1 : this.shape[0];
  }

  get cols(): number {
    return this.shape[this.shape.length - 1];
  }

  get numel(): number {
    return this.shape.reduce((n, d) => n * d, 1);
  }
}

/** Rotary tables on the device: f32 cos then sin, each [maxPositions, headDim / 2]. */
export class CudaRopeTable implements Tensor {
  readonly shape: readonly number[];
  readonly cos: DevicePtr;
  readonly sin: DevicePtr;
  readonly headDim: number;

  constructor(maxPositions: number, headDim: number, cos: DevicePtr, sin: DevicePtr) {
    this.shape = [2, maxPositions, headDim / 2];
    this.headDim = headDim;
    this.cos = cos;
    this.sin = sin;
  }

  get maxPositions(): number {
    return this.shape[1];
  }
}

/**
 * Every layer's K and V pools in one allocation: pool 2l is layer l's keys, 2l + 1 its values,
 * each bf16 [numBlocks, blockSize, numKvHeads, headDim].
 */
export class CudaKvCache implements KvCache {
  readonly spec: KvCacheSpec;
  readonly base: DevicePtr;

  constructor(spec: KvCacheSpec, base: DevicePtr) {
    this.spec = spec;
    this.base = base;
  }

  get poolBytes(): number {
    const { numBlocks, blockSize, numKvHeads, headDim } = this.spec;
    return numBlocks * blockSize * numKvHeads * headDim * 2;
  }

  get blockBytes(): number {
    const { blockSize, numKvHeads, headDim } = this.spec;
    return blockSize * numKvHeads * headDim * 2;
  }

  keys(layer: number): DevicePtr {
    return this.base + 2 * layer * this.poolBytes;
  }

  values(layer: number): DevicePtr {
    return this.base + (2 * layer + 1) * this.poolBytes;
  }
}

/** Device copies of a step's index arrays (uploaded together in beginStep) and its attention split. */
export interface StepDeviceArrays {
  tokenIds: DevicePtr;
  tokenSources: DevicePtr;
  positions: DevicePtr;
  slotMapping: DevicePtr;
  queryStartLoc: DevicePtr;
  seqLens: DevicePtr;
  blockTables: DevicePtr;
  logitsIndices: DevicePtr;
  decodeSeqs: DevicePtr;
  prefillTiles: DevicePtr;
}

export class CudaStepInputs implements StepInputs {
  readonly batch: BatchDescription;
  readonly device: StepDeviceArrays;
  readonly plan: AttentionPlan;
  /** The cache whose block ids this step's tables were checked against (checked once per step). */
  checkedCache: KvCache | null = null;

  constructor(batch: BatchDescription, device: StepDeviceArrays, plan: AttentionPlan) {
    this.batch = batch;
    this.device = device;
    this.plan = plan;
  }
}
