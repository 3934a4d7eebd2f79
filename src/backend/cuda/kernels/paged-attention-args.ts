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
  /** [numHeads] bf16 sink logits, or 0 when the layer has none (shape.sinks is null). */
  sinks: DevicePtr;
}

/**
 * How the kernels turn q · k into a score in the log2 domain (they exponentiate with exp2):
 * `qScale` · q · k, or with soft-capping `softcapLog2` · tanh(`qScale` · q · k), which is
 * cap · tanh(scale · q · k / cap) · log2(e). `softcapLog2` is 0 (unread) without a cap.
 */
export function scoreScales(shape: AttentionParams): { qScale: number; softcapLog2: number } {
  if (shape.softcap === null) return { qScale: shape.scale * Math.LOG2E, softcapLog2: 0 };
  return { qScale: shape.scale / shape.softcap, softcapLog2: shape.softcap * Math.LOG2E };
}

/** The defines that specialize both attention kernels to a layer's options (off costs nothing). */
export function attentionOptionDefines(shape: AttentionParams): { SOFTCAP: number; SINKS: number } {
  return { SOFTCAP: shape.softcap === null ? 0 : 1, SINKS: shape.sinks === null ? 0 : 1 };
}
