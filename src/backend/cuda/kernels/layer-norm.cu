// LayerNorm over groups of consecutive values of a row (a whole row, or each head of a
// projection), with a bias (Jais 2's) or without one (Cohere's: b null). Mean and variance accumulate in f32, in two passes over the group (the
// variance of v − mean, as transformers computes it, not E[v²] − mean², which cancels badly when
// the mean is large); each output is rounded to bf16 once.
#include "common.cuh"

// One block per group of width8 * 8 values: group g of the tensor starts at g * width8 chunks, and
// its weights (and biases) at (g % groups_per_row) * width8 chunks of w (b), so each group of a row
// has its own.
extern "C" __global__ void layer_norm_kernel(uint4* __restrict__ out, const uint4* __restrict__ x,
                                             const uint4* __restrict__ w, const uint4* __restrict__ b,
                                             int width8, int groups_per_row, float eps) {
  PDL_PROLOGUE();
  const long long base = (long long)blockIdx.x * width8;
  const long long param_base = (long long)(blockIdx.x % groups_per_row) * width8;
  const uint4* weights = w + param_base;
  const float n = (float)(width8 * 8);
  float sum = 0.f;
  for (int c = threadIdx.x; c < width8; c += blockDim.x) {
    float v[8];
    unpack8(x[base + c], v);
#pragma unroll
    for (int i = 0; i < 8; i++) sum += v[i];
  }
  const float mean = block_sum(sum) / n;
  float ss = 0.f;
  for (int c = threadIdx.x; c < width8; c += blockDim.x) {
    float v[8];
    unpack8(x[base + c], v);
#pragma unroll
    for (int i = 0; i < 8; i++) ss += (v[i] - mean) * (v[i] - mean);
  }
  const float inv = rsqrtf(block_sum(ss) / n + eps);
  for (int c = threadIdx.x; c < width8; c += blockDim.x) {
    float v[8], g[8], bias[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    unpack8(x[base + c], v);
    unpack8(weights[c], g);
    if (b != nullptr) unpack8(b[param_base + c], bias);
#pragma unroll
    for (int i = 0; i < 8; i++) v[i] = (v[i] - mean) * inv * g[i] + bias[i];
    out[base + c] = pack8(v);
  }
}
