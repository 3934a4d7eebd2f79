// Elementwise epilogues of the MLP and the projections.
#include "common.cuh"

// out [rows, n] = silu(gate) * up with gateUp [rows, 2n] (gate columns first); n8 = n / 8.
// grid (ceil(n8 / blockDim), rows). Computed in f32 from the bf16 inputs, rounded once.
extern "C" __global__ void silu_mul_kernel(uint4* __restrict__ out, const uint4* __restrict__ gate_up, int n8) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= n8) return;
  const long long row = blockIdx.y;
  float g[8], u[8], o[8];
  unpack8(gate_up[row * 2 * n8 + c], g);
  unpack8(gate_up[row * 2 * n8 + n8 + c], u);
#pragma unroll
  for (int i = 0; i < 8; i++) o[i] = g[i] / (1.f + __expf(-g[i])) * u[i];
  out[row * n8 + c] = pack8(o);
}

// In place: y [rows, n] += bias [n]; n8 = n / 8. grid (ceil(n8 / blockDim), rows).
extern "C" __global__ void add_bias_kernel(uint4* __restrict__ y, const uint4* __restrict__ bias, int n8) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= n8) return;
  const long long at = (long long)blockIdx.y * n8 + c;
  float v[8], b[8];
  unpack8(y[at], v);
  unpack8(bias[c], b);
#pragma unroll
  for (int i = 0; i < 8; i++) v[i] += b[i];
  y[at] = pack8(v);
}
