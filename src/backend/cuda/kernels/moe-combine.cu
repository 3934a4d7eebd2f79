// The routed experts' weighted sum back in token order, after the expert kernels wrote each
// (token, slot) pair's output in expert-sorted order.
#include "common.cuh"

// grid (tokens, ceil(hidden8 / blockDim)): out[t] = Σ over t's slots held here (experts first ..
// first + count - 1), in increasing expert order, of weight · y[place], summed in f32 and rounded
// once. y [pairs, hidden]; ids, weights, pair_pos [tokens, top_k]; hidden8 = hidden / 8.
extern "C" __global__ void moe_combine_kernel(uint4* __restrict__ out, const uint4* __restrict__ y, const int* __restrict__ ids,
                                              const float* __restrict__ weights, const int* __restrict__ pair_pos, int first, int count,
                                              int top_k, int hidden8) {
  PDL_PROLOGUE();
  const int c = blockIdx.y * blockDim.x + threadIdx.x;
  if (c >= hidden8) return;
  const int t = blockIdx.x;
  float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  for (int s = 0; s < top_k; s++) {
    const int pair = t * top_k + s;
    const int e = ids[pair] - first;
    if (e < 0 || e >= count) continue;
    const float wt = weights[pair];
    float v[8];
    unpack8(y[(long long)pair_pos[pair] * hidden8 + c], v);
#pragma unroll
    for (int i = 0; i < 8; i++) acc[i] = fmaf(wt, v[i], acc[i]);
  }
  out[(long long)t * hidden8 + c] = pack8(acc);
}
