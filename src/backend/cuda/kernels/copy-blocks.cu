// Copy-on-write of whole KV blocks after a fork. The cache is one allocation of pools (K then V of
// an attention layer, one pool of rows of an MLA layer, each followed with int8 by its scale pools)
// of numBlocks blocks each; a launch covers a run of consecutive pools of the same block size, so
// (pool, block) addresses a contiguous block.
#include "common.cuh"

// grid (numPairs, pools in the run); block_chunks = a block's bytes / 16.
extern "C" __global__ void copy_blocks_kernel(uint4* __restrict__ pools, const int* __restrict__ src,
                                              const int* __restrict__ dst, long long pool_chunks, int block_chunks) {
  PDL_PROLOGUE();
  uint4* pool = pools + blockIdx.y * pool_chunks;
  const uint4* from = pool + (long long)src[blockIdx.x] * block_chunks;
  uint4* to = pool + (long long)dst[blockIdx.x] * block_chunks;
  for (int c = threadIdx.x; c < block_chunks; c += blockDim.x) to[c] = from[c];
}

// Speculative tree verification moves the accepted path's K/V into place: slot src[i] to dst[i]
// in every pool of the run, the pairs in order, each reading its source after the earlier pairs
// wrote (a later pair may read what an earlier one wrote), so each thread runs them one after
// another over its word of the slot. Words of 4 bytes: an 8-bit cache's slots (heads × head dim
// codes) and its int8 scale pools' slots (a float a head) need not be a multiple of 16 bytes.
// grid (ceil(slot_words / 256), pools in the run); slot_words = a slot's bytes / 4.
extern "C" __global__ void copy_slots_kernel(unsigned int* __restrict__ pools, const int* __restrict__ src,
                                             const int* __restrict__ dst, int num_pairs, long long pool_words,
                                             int slot_words) {
  PDL_PROLOGUE();
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= slot_words) return;
  unsigned int* pool = pools + blockIdx.y * pool_words;
  for (int i = 0; i < num_pairs; i++) pool[(long long)dst[i] * slot_words + c] = pool[(long long)src[i] * slot_words + c];
}
