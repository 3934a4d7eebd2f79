// The gated MLP's activation after its gate/up GEMM (the GEMV fuses it instead).
#include "common.cuh"
#include "gated-activation.cuh"

// nvcc-check: -DACT=0
// nvcc-check: -DACT=1
// nvcc-check: -DACT=2
// nvcc-check: -DACT=3
// nvcc-check: -DACT=4

#ifndef ACT
#error "compile with -DACT=<0 silu | 1 gelu-tanh | 2 clamped swiglu | 3 gelu | 4 relu> (gated-activation.cuh)"
#endif

// out [rows, n] = act(gate) * up with gateUp [rows, 2n] (gate columns first); n8 = n / 8.
// grid (ceil(n8 / blockDim), min(rows, 65535)). Computed in f32 from the bf16 inputs, rounded once. alpha and
// limit are the clamped SwiGLU's (ACT=2 only).
extern "C" __global__ void gated_activation_kernel(uint4* __restrict__ out, const uint4* __restrict__ gate_up, int rows, int n8,
                                                   float alpha, float limit) {
  PDL_PROLOGUE();
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= n8) return;
  // Rows stride by the grid's height: a launch holds at most 65,535 of them (a long prefill chunk has more).
  for (long long row = blockIdx.y; row < rows; row += gridDim.y) {
    float g[8], u[8], o[8];
    unpack8(gate_up[row * 2 * n8 + c], g);
    unpack8(gate_up[row * 2 * n8 + n8 + c], u);
#pragma unroll
    for (int i = 0; i < 8; i++) o[i] = gated_activation(g[i], u[i], alpha, limit);
    out[row * n8 + c] = pack8(o);
  }
}
