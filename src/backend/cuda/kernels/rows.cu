// Row gathers: the embedding lookup (rows of the table by token id) and the logits rows.
#include "common.cuh"

// out[r, :] = src[indices[r], :] for a row of `chunks` 16-byte chunks. One block per output row.
extern "C" __global__ void gather_rows_kernel(uint4* __restrict__ out, const uint4* __restrict__ src,
                                              const int* __restrict__ indices, int chunks) {
  const long long row = indices[blockIdx.x];
  const uint4* from = src + row * chunks;
  uint4* to = out + (long long)blockIdx.x * chunks;
  for (int c = threadIdx.x; c < chunks; c += blockDim.x) to[c] = from[c];
}
