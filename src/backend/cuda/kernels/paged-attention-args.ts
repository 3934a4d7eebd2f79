import type { AttentionParams } from '../../backend.ts';
import type { DevicePtr } from '../driver-api.ts';

/** Device inputs both attention kernels read: the packed qkv, one layer's pools and the step's index arrays. */
export interface PagedAttentionArgs {
  /** [numTokens, numHeads * headDim] bf16. */
  out: DevicePtr;
  /** [numTokens, (numHeads + 2 * numKvHeads) * headDim] bf16, queries already rotated. */
  qkv: DevicePtr;
  kPool: DevicePtr;
  vPool: DevicePtr;
  queryStartLoc: DevicePtr;
  positions: DevicePtr;
  seqLens: DevicePtr;
  blockTables: DevicePtr;
  maxBlocksPerSeq: number;
  blockSize: number;
  shape: AttentionParams;
}

/** Softmax scale folded with log2(e), since the kernels exponentiate with exp2. */
export function scaleLog2(shape: AttentionParams): number {
  return shape.scale * Math.LOG2E;
}
