// What the decode attention kernels (decode-attention.cu, decode-attention-mma.cu) share about
// their partitions' output.
#pragma once
#include "common.cuh"

// A partition that sees no key (a shorter sequence of the batch): with partitions its rows of the
// partials say so (max -inf, sum 0, which decode_reduce_kernel skips), else the decode's output
// rows of the kv head's GROUP query heads are zeros. head0: the first query head's row in the partials.
template <int GROUP_HEADS, int HEAD_D, int THREADS_N>
__device__ __forceinline__ void write_empty_partition(bf16* out, float* part_ml, long long head0, int part, int num_partitions, int token,
                                                      int num_heads, int kvh) {
  if (num_partitions > 1) {
    if (threadIdx.x < GROUP_HEADS) {
      part_ml[((head0 + threadIdx.x) * num_partitions + part) * 2] = NEG_INF;
      part_ml[((head0 + threadIdx.x) * num_partitions + part) * 2 + 1] = 0.f;
    }
  } else {
    for (int i = threadIdx.x; i < GROUP_HEADS * HEAD_D; i += THREADS_N) out[(long long)token * num_heads * HEAD_D + kvh * GROUP_HEADS * HEAD_D + i] = 0;
  }
}
