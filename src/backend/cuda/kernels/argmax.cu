// Greedy sampling on the GPU: only one token id per row crosses to the host, not a vocabulary of logits.
#include "common.cuh"

// (value, index) pairs ordered as the host's argmax scans: larger value first, lower index on ties.
__device__ __forceinline__ bool beats(float v, int i, float best, int best_i) { return v > best || (v == best && i < best_i); }

// out[row] = index of the largest finite-or-+inf value of x[row, :] (bf16), the lowest on ties; -1
// when every value is NaN or -inf. grid (rows), block 1024.
extern "C" __global__ void __launch_bounds__(1024) argmax_rows_kernel(int* __restrict__ out, const bf16* __restrict__ x, int cols) {
  __shared__ float best_values[32];
  __shared__ int best_indices[32];
  const bf16* row = x + (long long)blockIdx.x * cols;
  float best = NEG_INF;
  int best_i = 0x7fffffff;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    const float v = bf16_to_f32(row[c]);
    if (v > best) {  // NaN and -inf never win; a thread meets its indices in increasing order
      best = v;
      best_i = c;
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float v = __shfl_xor_sync(FULL_MASK, best, o);
    const int i = __shfl_xor_sync(FULL_MASK, best_i, o);
    if (beats(v, i, best, best_i)) {
      best = v;
      best_i = i;
    }
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    best_values[warp] = best;
    best_indices[warp] = best_i;
  }
  __syncthreads();
  if (warp == 0) {
    const int warps = blockDim.x >> 5;
    best = lane < warps ? best_values[lane] : NEG_INF;
    best_i = lane < warps ? best_indices[lane] : 0x7fffffff;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float v = __shfl_xor_sync(FULL_MASK, best, o);
      const int i = __shfl_xor_sync(FULL_MASK, best_i, o);
      if (beats(v, i, best, best_i)) {
        best = v;
        best_i = i;
      }
    }
    if (lane == 0) out[blockIdx.x] = best_i == 0x7fffffff ? -1 : best_i;
  }
}
