import type { CudaDevice } from '../cuda-device.ts';
import type { DevicePtr } from '../driver-api.ts';
import type { MlaParams } from '../../backend.ts';
import type { KvCacheDtype } from '../../../step/kv-cache-layout.ts';
import { kvDtypeDefine } from './kv-quantize.ts';

export interface SparseMlaArgs {
  /** [numTokens, numHeads * latentDim] bf16. */
  out: DevicePtr;
  qLatent: DevicePtr;
  q: DevicePtr;
  /** The layer's rows [slots, latentDim + ropeDim]: bf16, or 8-bit codes (`dtype`, fp8 with scale 1). */
  pool: DevicePtr;
  dtype: KvCacheDtype;
  /** int8: the pool's float32 scale per row; 0 otherwise. */
  rowScales: DevicePtr;
  /** [numTokens, topK] int32 positions, -1 for none. */
  selection: DevicePtr;
  topK: number;
  queryStartLoc: DevicePtr;
  blockTables: DevicePtr;
  numSeqs: number;
  numTokens: number;
  maxBlocksPerSeq: number;
  blockSize: number;
  mla: MlaParams;
}

const HEADS_PER_BLOCK = 4;
/** What sparse_mla_kernel's lanes hold: 32 × LATENT_PER_LANE latent and 32 × ROPE_PER_LANE rope values. */
export const SPARSE_MLA_MAX_LATENT = 512;
export const SPARSE_MLA_MAX_ROPE = 64;

/** Absorbed MLA over each token's selected rows (sparse_mla_kernel), decode and prefill alike; an 8-bit row is dequantized as it is read. */
export function launchSparseMla(device: CudaDevice, a: SparseMlaArgs): void {
  if (a.numTokens === 0) return;
  const { numHeads, nopeDim, latentDim, ropeDim, scale } = a.mla;
  const kernel = device.kernel('sparse-mla.cu', 'sparse_mla_kernel', 'pppppppiiiiiiiifpf', { KV_DTYPE: kvDtypeDefine(a.dtype) });
  device.launch(kernel, [a.numTokens, Math.ceil(numHeads / HEADS_PER_BLOCK)], [32 * HEADS_PER_BLOCK], 0, [
    a.out,
    a.qLatent,
    a.q,
    a.pool,
    a.selection,
    a.queryStartLoc,
    a.blockTables,
    a.numSeqs,
    a.maxBlocksPerSeq,
    a.blockSize,
    a.topK,
    numHeads,
    nopeDim,
    latentDim,
    ropeDim,
    scale,
    a.rowScales,
    1,
  ]);
}
