// Elementwise ops on activations: a projection's bias (bf16 or f32 output), the final logits' soft-cap,
// SiLU (Medusa heads' residual blocks), xIELU (Apertus's MLP), attention output gates.
#include "common.cuh"

// In place: y [rows, n] += bias [n]; n8 = n / 8. grid (ceil(n8 / blockDim), min(rows, 65535)).
extern "C" __global__ void add_bias_kernel(uint4* __restrict__ y, const uint4* __restrict__ bias, int rows, int n8) {
  PDL_PROLOGUE();
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= n8) return;
  float b[8];
  unpack8(bias[c], b);
  // Rows stride by the grid's height: a launch holds at most 65,535 of them (a long prefill chunk has more).
  for (long long row = blockIdx.y; row < rows; row += gridDim.y) {
    const long long at = row * n8 + c;
    float v[8];
    unpack8(y[at], v);
#pragma unroll
    for (int i = 0; i < 8; i++) v[i] += b[i];
    y[at] = pack8(v);
  }
}

// In place: y [rows, n] += bias [n] for any n, one element a thread (a narrow projection, such as
// a router over a few experts, whose rows are not 16-byte aligned). Grid-stride over rows * n.
extern "C" __global__ void add_bias_unaligned_kernel(bf16* __restrict__ y, const bf16* __restrict__ bias, long long total, int n) {
  PDL_PROLOGUE();
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
    y[i] = f32_to_bf16(bf16_to_f32(y[i]) + bf16_to_f32(bias[i % n]));
  }
}

// In place: y [rows, n] += bias [n] with y f32 (an MoE router's logits, kept unrounded), bias bf16.
// Grid-stride over rows * n.
extern "C" __global__ void add_bias_f32_kernel(float* __restrict__ y, const bf16* __restrict__ bias, long long total, int n) {
  PDL_PROLOGUE();
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
    y[i] += bf16_to_f32(bias[i % n]);
  }
}

// In place: x = cap · tanh(x / cap) over n elements (Gemma 2's final logits), in f32 and rounded
// once. grid-stride over ceil(n / blockDim) blocks at most; any n.
extern "C" __global__ void softcap_kernel(bf16* __restrict__ x, long long n, float cap) {
  PDL_PROLOGUE();
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    x[i] = f32_to_bf16(cap * tanhf(bf16_to_f32(x[i]) / cap));
  }
}

// In place: x = x · factor over n elements (Granite's residual multiplier and logits scaling), in
// f32 and rounded once. Grid-stride; any n.
extern "C" __global__ void scale_kernel(bf16* __restrict__ x, long long n, float factor) {
  PDL_PROLOGUE();
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    x[i] = f32_to_bf16(bf16_to_f32(x[i]) * factor);
  }
}

// In place: x = x · σ(x) over n elements, in f32 and rounded once. Grid-stride; any n.
extern "C" __global__ void silu_kernel(bf16* __restrict__ x, long long n) {
  PDL_PROLOGUE();
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const float v = bf16_to_f32(x[i]);
    x[i] = f32_to_bf16(v / (1.f + __expf(-v)));
  }
}

// In place: xIELU over n elements, in f32 and rounded once: alpha_p · x² + beta · x where x > 0, else
// (expm1(min(x, eps)) − x) · alpha_n + beta · x (alpha_p and alpha_n already through their softplus).
// Grid-stride; any n.
extern "C" __global__ void xielu_kernel(bf16* __restrict__ x, long long n, float alpha_p, float alpha_n, float beta, float eps) {
  PDL_PROLOGUE();
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const float v = bf16_to_f32(x[i]);
    x[i] = f32_to_bf16(v > 0.f ? alpha_p * v * v + beta * v : (expm1f(fminf(v, eps)) - v) * alpha_n + beta * v);
  }
}

// out = x · fn(gate) over n elements of rows `cols` wide, fn(gate) rounded to bf16 first: an attention
// output gate. Each gate value covers `group` consecutive columns (1: one per element; a head's width:
// one per head), the gate row being cols / group wide. softplus 0: σ(g); 1: ln(1 + eᵍ), g itself past
// 20 as torch's. Grid-stride; any n.
extern "C" __global__ void multiply_gate_kernel(bf16* __restrict__ out, const bf16* __restrict__ x, const bf16* __restrict__ gate, long long n,
                                                int cols, int group, int softplus) {
  PDL_PROLOGUE();
  const int gate_cols = cols / group;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const long long row = i / cols;
    const float z = bf16_to_f32(gate[row * gate_cols + (int)(i - row * cols) / group]);
    const float g = bf16_to_f32(f32_to_bf16(softplus ? (z > 20.f ? z : log1pf(expf(z))) : 1.f / (1.f + expf(-z))));
    out[i] = f32_to_bf16(bf16_to_f32(x[i]) * g);
  }
}
