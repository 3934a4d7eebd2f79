import type { CudaDevice } from '../cuda-device.ts';
import type { DevicePtr } from '../driver-api.ts';
import type { MlaParams } from '../../backend.ts';

export interface SparseMlaArgs {
  /** [numTokens, numHeads * latentDim] bf16. */
  out: DevicePtr;
  qLatent: DevicePtr;
  q: DevicePtr;
  /** The layer's rows [slots, latentDim + ropeDim] bf16. */
  pool: DevicePtr;
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

/** Absorbed MLA over each token's selected rows (sparse_mla_kernel), decode and prefill alike. */
export function launchSparseMla(device: CudaDevice, a: SparseMlaArgs): void {
  if (a.numTokens === 0) return;
  const { numHeads, nopeDim, latentDim, ropeDim, scale } = a.mla;
  const kernel = device.kernel('sparse-mla.cu', 'sparse_mla_kernel', 'pppppppiiiiiiiif');
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
  ]);
}
