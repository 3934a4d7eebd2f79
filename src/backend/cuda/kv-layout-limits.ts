import { invalidArgument, KeelError } from '../../errors.ts';
import type { KvCacheLayout } from '../../step/kv-cache-layout.ts';

/**
 * The largest attention head dim the CUDA kernels take: decode-attention.cu holds any head up to it
 * in one CTA's tiles, and prefill-attention.cu splits a head over 256 across a pair of warps.
 */
export const MAX_CUDA_HEAD_DIM = 512;

/** Token slots a CUDA KV pool may have (an int32 indexes them in the attention kernels' staging). */
export const MAX_CUDA_KV_SLOTS = 2 ** 31 - 1;

/**
 * Throws, naming the layer's shape and the limit, for a KV cache layout the CUDA kernels cannot run:
 * checked where the cache is created, before any weight is loaded onto the device.
 */
export function checkCudaKvLayout(layout: KvCacheLayout): void {
  // The attention kernels' K/V staging hands a row's cache slot between lanes as an int
  // (kv-tile-rows.cuh), so a pool's token slots must fit one.
  if (layout.numBlocks * layout.blockSize > MAX_CUDA_KV_SLOTS) {
    throw invalidArgument(`a KV cache of ${layout.numBlocks} blocks of ${layout.blockSize} tokens has more token slots than the CUDA kernels address (${MAX_CUDA_KV_SLOTS}); lower --num-kv-blocks, --max-num-seqs or --max-model-len`);
  }
  // Blocks are copied (copy-on-write) and codes read in 16-byte units: with a block size that is
  // a multiple of 4, every 8-bit or int4 pool (head dims are multiples of 8) and scale pool holds
  // whole units per block.
  if ((layout.dtype ?? 'auto') !== 'auto' && layout.blockSize % 4 !== 0) {
    throw invalidArgument(`an ${layout.dtype} KV cache on the CUDA backend needs a block size that is a multiple of 4, not ${layout.blockSize}`);
  }
  for (const spec of layout.layers) {
    if (spec.kind === 'mla') {
      if (spec.latentDim % 32 !== 0 || spec.ropeDim % 8 !== 0) {
        throw new KeelError('invalid_model', `the CUDA backend needs an MLA latent dim that is a multiple of 32 and a rope dim that is a multiple of 8, not ${spec.latentDim} and ${spec.ropeDim}`);
      }
      if (spec.indexKeys !== undefined && spec.indexKeys.keyDim % 8 !== 0) {
        throw new KeelError('invalid_model', `the CUDA backend needs a sparse-attention indexer head dim that is a multiple of 8, not ${spec.indexKeys.keyDim}`);
      }
    } else if (spec.kind === 'rows') {
      if (spec.width % 8 !== 0) throw new KeelError('invalid_model', `the CUDA backend needs hidden-state rows of a multiple of 8 values, not ${spec.width}`);
    } else if (spec.kind !== 'state' && (spec.headDim % 8 !== 0 || spec.headDim > MAX_CUDA_HEAD_DIM)) {
      throw new KeelError('invalid_model', `the CUDA backend needs a head dim that is a multiple of 8 and at most ${MAX_CUDA_HEAD_DIM}, not ${spec.headDim}`);
    }
  }
}
