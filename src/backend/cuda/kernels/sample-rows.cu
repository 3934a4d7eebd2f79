// Sampling on the GPU: only one token id per row crosses to the host, not a vocabulary of logits.
#include "common.cuh"

// The noise of src/sampling/gumbel.ts, bit for bit up to logf's rounding.
__device__ __forceinline__ unsigned int mix32(unsigned int h) {
  h = (h ^ (h >> 16)) * 0x85ebca6bu;
  h = (h ^ (h >> 13)) * 0xc2b2ae35u;
  return h ^ (h >> 16);
}

__device__ __forceinline__ float gumbel_noise(unsigned int seed, unsigned int index) {
  const unsigned int h = mix32(mix32(seed ^ (index * 0x9e3779b9u)) ^ 0x5bd1e995u);
  const float u = ((float)(h >> 8) + 0.5f) * 5.9604644775390625e-8f;  // 2^-24
  return -logf(-logf(u));
}

// (value, index) pairs ordered as the host scans: larger value first, lower index on ties.
__device__ __forceinline__ bool beats(float v, int i, float best, int best_i) { return v > best || (v == best && i < best_i); }

// Leaves every lane of the warp holding the warp's best (value, index) pair.
__device__ __forceinline__ void warp_argmax(float& best, int& best_i) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float v = __shfl_xor_sync(FULL_MASK, best, o);
    const int i = __shfl_xor_sync(FULL_MASK, best_i, o);
    if (beats(v, i, best, best_i)) {
      best = v;
      best_i = i;
    }
  }
}

// Folds (max m, sum s of exp(x - m)) pairs: the running log-sum-exp of a softmax.
__device__ __forceinline__ void merge_lse(float& m, float& s, float m2, float s2) {
  const float top = fmaxf(m, m2);
  if (top == NEG_INF) return;
  s = s * __expf(m - top) + s2 * __expf(m2 - top);
  m = top;
}

// out[row] = argmax over c of x[row, c] * inv_temperature[row] + noise(seeds[row], c), plain argmax
// where inv_temperature is 0 (greedy); -1 when no value is finite. logprobs[row] = the token's
// log-probability under softmax(x[row]), the raw distribution that requested logprobs describe.
// grid (rows), block 1024.
extern "C" __global__ void __launch_bounds__(1024) sample_rows_kernel(int* __restrict__ out, float* __restrict__ logprobs, const bf16* __restrict__ x,
                                                                    int cols, const float* __restrict__ inv_temperature,
                                                                    const unsigned int* __restrict__ seeds) {
  __shared__ float best_values[32];
  __shared__ int best_indices[32];
  __shared__ float lse_m[32], lse_s[32];
  const bf16* row = x + (long long)blockIdx.x * cols;
  const float inv = inv_temperature[blockIdx.x];
  const unsigned int seed = seeds[blockIdx.x];
  float best = NEG_INF;
  int best_i = 0x7fffffff;
  float m = NEG_INF, s = 0.f;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    const float logit = bf16_to_f32(row[c]);
    if (!(logit > NEG_INF)) continue;  // NaN and -inf never win
    merge_lse(m, s, logit, 1.f);
    const float v = inv == 0.f ? logit : logit * inv + gumbel_noise(seed, (unsigned int)c);
    if (v > best) {  // a thread meets its indices in increasing order
      best = v;
      best_i = c;
    }
  }
  warp_argmax(best, best_i);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) merge_lse(m, s, __shfl_xor_sync(FULL_MASK, m, o), __shfl_xor_sync(FULL_MASK, s, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    best_values[warp] = best;
    best_indices[warp] = best_i;
    lse_m[warp] = m;
    lse_s[warp] = s;
  }
  __syncthreads();
  if (warp == 0) {
    const int warps = blockDim.x >> 5;
    best = lane < warps ? best_values[lane] : NEG_INF;
    best_i = lane < warps ? best_indices[lane] : 0x7fffffff;
    m = lane < warps ? lse_m[lane] : NEG_INF;
    s = lane < warps ? lse_s[lane] : 0.f;
    warp_argmax(best, best_i);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) merge_lse(m, s, __shfl_xor_sync(FULL_MASK, m, o), __shfl_xor_sync(FULL_MASK, s, o));
    if (lane == 0) {
      const bool found = best_i != 0x7fffffff;
      out[blockIdx.x] = found ? best_i : -1;
      logprobs[blockIdx.x] = found ? bf16_to_f32(row[best_i]) - (m + logf(s)) : NEG_INF;
    }
  }
}
