// Streams a buffer through the SMs once, the access pattern of a decode step reading its weights:
// the fastest the memory serves reads, which the decode roofline divides by.
#include "common.cuh"

// Reads n16 16-byte words of src (grid-stride, four independent loads in flight per thread) and
// folds them with XOR. The fold is written only if it equals `never`, which the host picks so that
// it cannot happen in practice; the conditional store keeps the compiler from dropping the loads.
extern "C" __global__ void read_bandwidth_kernel(const uint4* __restrict__ src, long long n16, unsigned int* __restrict__ sink, int never) {
  begin_dependent_kernel();
  const long long stride = (long long)gridDim.x * blockDim.x;
  unsigned int fold = 0;
  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  for (; i + 3 * stride < n16; i += 4 * stride) {
    const uint4 a = src[i], b = src[i + stride], c = src[i + 2 * stride], d = src[i + 3 * stride];
    fold ^= a.x ^ a.y ^ a.z ^ a.w ^ b.x ^ b.y ^ b.z ^ b.w ^ c.x ^ c.y ^ c.z ^ c.w ^ d.x ^ d.y ^ d.z ^ d.w;
  }
  for (; i < n16; i += stride) {
    const uint4 a = src[i];
    fold ^= a.x ^ a.y ^ a.z ^ a.w;
  }
  if (fold == (unsigned int)never) sink[0] = fold;
}
