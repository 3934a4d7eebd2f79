// Copy-on-write of whole KV blocks after a fork. The cache is one allocation of pools (K then V of
// an attention layer, one pool of rows of an MLA layer) of numBlocks blocks each; a launch covers a
// run of consecutive pools of the same block size, so (pool, block) addresses a contiguous block.
#include "common.cuh"

// grid (numPairs, pools in the run); block_chunks = a block's bytes / 16.
extern "C" __global__ void copy_blocks_kernel(uint4* __restrict__ pools, const int* __restrict__ src,
                                              const int* __restrict__ dst, long long pool_chunks, int block_chunks) {
  uint4* pool = pools + blockIdx.y * pool_chunks;
  const uint4* from = pool + (long long)src[blockIdx.x] * block_chunks;
  uint4* to = pool + (long long)dst[blockIdx.x] * block_chunks;
  for (int c = threadIdx.x; c < block_chunks; c += blockDim.x) to[c] = from[c];
}
