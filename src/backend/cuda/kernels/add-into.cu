// Residual-style accumulation of one tensor into another.
#include "common.cuh"

// In place: target [rows, cols] += σ(gate[row]) · x, or += x when gate is null (Qwen2-MoE's
// shared expert joining the routed ones). grid (rows, ceil(cols8 / blockDim)); cols8 = cols / 8.
extern "C" __global__ void add_into_kernel(uint4* __restrict__ target, const uint4* __restrict__ x, const bf16* __restrict__ gate, int cols8) {
  PDL_PROLOGUE();
  const int c = blockIdx.y * blockDim.x + threadIdx.x;
  if (c >= cols8) return;
  const long long at = (long long)blockIdx.x * cols8 + c;
  const float g = gate == nullptr ? 1.f : 1.f / (1.f + __expf(-bf16_to_f32(gate[blockIdx.x])));
  float t[8], v[8];
  unpack8(target[at], t);
  unpack8(x[at], v);
#pragma unroll
  for (int i = 0; i < 8; i++) t[i] = fmaf(g, v[i], t[i]);
  target[at] = pack8(t);
}
