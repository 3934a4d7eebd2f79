// Streams a buffer through the SMs once, the access pattern of a decode step reading its weights:
// the fastest the memory serves reads, which the decode roofline divides by. It reads the way the
// GEMV reads weights (each warp a contiguous 4 KiB run per pass, eight 16-byte loads in flight per
// lane, not kept in L1).
#include "common.cuh"

#define LOADS 8

// Reads n16 16-byte words of src (n16 a multiple of 32 * LOADS) and folds them with XOR. The fold
// is written only if it equals `never`, which the host picks so that it cannot happen in practice;
// the conditional store keeps the compiler from dropping the loads.
extern "C" __global__ void read_bandwidth_kernel(const uint4* __restrict__ src, long long n16, unsigned int* __restrict__ sink, int never) {
  PDL_PROLOGUE();
  const int lane = threadIdx.x & 31;
  const long long warps = (long long)gridDim.x * (blockDim.x >> 5);
  unsigned int fold = 0;
  for (long long run = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); run * 32 * LOADS < n16; run += warps) {
    const uint4* at = src + run * 32 * LOADS + lane;
    uint4 v[LOADS];
#pragma unroll
    for (int u = 0; u < LOADS; u++) v[u] = load_streaming(at + u * 32);
#pragma unroll
    for (int u = 0; u < LOADS; u++) fold ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  if (fold == (unsigned int)never) sink[0] = fold;
}
