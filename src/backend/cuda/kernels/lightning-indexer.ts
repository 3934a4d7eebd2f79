import type { CudaDevice } from '../cuda-device.ts';
import type { DevicePtr } from '../driver-api.ts';
import type { IndexerParams } from '../../backend.ts';
import type { KvCacheDtype } from '../../../step/kv-cache-layout.ts';
import { kvDtypeDefine } from './kv-quantize.ts';

export interface IndexerKeyWriteArgs {
  /** [numTokens, numHeads * headDim] bf16, its heads' leading ropeDim rotated in place. */
  q: DevicePtr;
  /** [numTokens, headDim] bf16, normalized and rotated in place. */
  k: DevicePtr;
  normWeight: DevicePtr;
  normBias: DevicePtr;
  eps: number;
  cos: DevicePtr;
  sin: DevicePtr;
  rotaryRows: DevicePtr;
  slotMapping: DevicePtr;
  /** The layer's indexer keys [slots, headDim]: bf16, or 8-bit codes (`dtype`). */
  keys: DevicePtr;
  dtype: KvCacheDtype;
  /** An 8-bit cache: the float32 scale of each key [slots] (max|k| / 448 for fp8, / 127 for int8); 0 for bf16. */
  keyScales: DevicePtr;
  numTokens: number;
  indexer: IndexerParams;
}

/**
 * LayerNorm, rotation and cache write of the step's indexer keys (an 8-bit cache's quantized from
 * their float32 values), rotation of its queries: indexer_key_write_kernel.
 */
export function launchIndexerKeyWrite(device: CudaDevice, a: IndexerKeyWriteArgs): void {
  if (a.numTokens === 0) return;
  const kernel = device.kernel('lightning-indexer.cu', 'indexer_key_write_kernel', 'ppppppppppiif', { INDEX_HEADS: a.indexer.numHeads, KV_DTYPE: kvDtypeDefine(a.dtype) });
  const threads = Math.min(256, Math.max(32, Math.ceil(a.indexer.headDim / 32) * 32));
  device.launch(kernel, [a.numTokens], [threads], 0, [
    a.q,
    a.k,
    a.normWeight,
    a.normBias,
    a.cos,
    a.sin,
    a.rotaryRows,
    a.slotMapping,
    a.keys,
    a.keyScales,
    a.indexer.headDim,
    a.indexer.ropeDim,
    a.eps,
  ]);
}

export interface IndexerTopKArgs {
  /** [numTokens, numHeads * headDim] bf16, rotated. */
  q: DevicePtr;
  /** [numTokens, numHeads] f32. */
  weights: DevicePtr;
  /** The layer's indexer keys as IndexerKeyWriteArgs has them. */
  keys: DevicePtr;
  dtype: KvCacheDtype;
  keyScales: DevicePtr;
  queryStartLoc: DevicePtr;
  positions: DevicePtr;
  blockTables: DevicePtr;
  numSeqs: number;
  numTokens: number;
  maxBlocksPerSeq: number;
  blockSize: number;
  indexer: IndexerParams;
  /** [numTokens, topK] int32: the selection. */
  out: DevicePtr;
  /** Step memory (the same addresses for the same step shape, so a recorded graph replays). */
  alloc: (bytes: number) => DevicePtr;
}

/** Bytes of scores one launch may hold: a long prefill chunk runs in groups of tokens that fit. */
const SCORE_BYTES = 64 << 20;

/**
 * Each token's top-k positions (indexer_topk_kernel): its scores over the positions its block
 * table can hold go to a step buffer, so tokens run in groups of at most SCORE_BYTES of scores.
 */
export function launchIndexerTopK(device: CudaDevice, a: IndexerTopKArgs): void {
  if (a.numTokens === 0) return;
  const stride = a.maxBlocksPerSeq * a.blockSize;
  const group = Math.max(1, Math.min(a.numTokens, Math.floor(SCORE_BYTES / (4 * stride))));
  const scores = a.alloc(group * stride * 4);
  const kernel = device.kernel('lightning-indexer.cu', 'indexer_topk_kernel', 'pppppppiiiiiffplip', { INDEX_HEADS: a.indexer.numHeads, KV_DTYPE: kvDtypeDefine(a.dtype) });
  const { headDim, topK, scale, weightScale } = a.indexer;
  for (let first = 0; first < a.numTokens; first += group) {
    device.launch(kernel, [Math.min(group, a.numTokens - first)], [256], 0, [
      a.q,
      a.weights,
      a.keys,
      a.keyScales,
      a.queryStartLoc,
      a.positions,
      a.blockTables,
      a.numSeqs,
      a.maxBlocksPerSeq,
      a.blockSize,
      headDim,
      topK,
      scale,
      weightScale,
      scores,
      stride,
      first,
      a.out,
    ]);
  }
}
