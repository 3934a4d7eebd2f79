// RMSNorm variants. Sums of squares accumulate in f32; each output is rounded to bf16 once.
#include "common.cuh"

// out = x * inv * w over one row of cols8 * 8 values, each thread taking every blockDim.x-th chunk.
__device__ __forceinline__ void scale_row(uint4* out, const uint4* x, const uint4* __restrict__ w, float inv, int cols8) {
  for (int c = threadIdx.x; c < cols8; c += blockDim.x) {
    float v[8], g[8];
    unpack8(x[c], v);
    unpack8(w[c], g);
#pragma unroll
    for (int i = 0; i < 8; i++) v[i] = v[i] * inv * g[i];
    out[c] = pack8(v);
  }
}

// out = x * rsqrt(mean(x^2) + eps) * w, one block per row of cols8 * 8 values.
extern "C" __global__ void rms_norm_kernel(uint4* __restrict__ out, const uint4* __restrict__ x,
                                           const uint4* __restrict__ w, int cols8, float eps) {
  PDL_PROLOGUE();
  const long long base = (long long)blockIdx.x * cols8;
  float ss = 0.f;
  for (int c = threadIdx.x; c < cols8; c += blockDim.x) {
    float v[8];
    unpack8(x[base + c], v);
#pragma unroll
    for (int i = 0; i < 8; i++) ss += v[i] * v[i];
  }
  scale_row(out + base, x + base, w, rsqrtf(block_sum(ss) / (cols8 * 8) + eps), cols8);
}

// residual = bf16(residual + x) in place, then out = rmsNorm(residual) * w. The norm reads the
// rounded residual, as the next layer will.
extern "C" __global__ void add_rms_norm_kernel(uint4* __restrict__ out, uint4* __restrict__ residual,
                                               const uint4* __restrict__ x, const uint4* __restrict__ w,
                                               int cols8, float eps) {
  PDL_PROLOGUE();
  const long long base = (long long)blockIdx.x * cols8;
  float ss = 0.f;
  for (int c = threadIdx.x; c < cols8; c += blockDim.x) {
    float r[8], v[8];
    unpack8(residual[base + c], r);
    unpack8(x[base + c], v);
#pragma unroll
    for (int i = 0; i < 8; i++) r[i] += v[i];
    const uint4 rounded = pack8(r);
    residual[base + c] = rounded;
    unpack8(rounded, r);
#pragma unroll
    for (int i = 0; i < 8; i++) ss += r[i] * r[i];
  }
  // Each thread re-reads only the chunks it wrote above, so no barrier is needed.
  scale_row(out + base, residual + base, w, rsqrtf(block_sum(ss) / (cols8 * 8) + eps), cols8);
}

// In place per-head RMSNorm of the query heads (q_w) and key heads (k_w) of packed qkv rows, and of
// the value heads (v_w) when normed_heads counts them too (num_heads + 2 * num_kv_heads).
// Grid (tokens, head groups): one warp a head, two values per lane per step.
extern "C" __global__ void head_rms_norm_kernel(unsigned int* __restrict__ qkv, const unsigned int* __restrict__ q_w,
                                                const unsigned int* __restrict__ k_w, const unsigned int* __restrict__ v_w,
                                                int num_heads, int num_kv_heads, int normed_heads, int head_dim,
                                                int row_width, float eps) {
  PDL_PROLOGUE();
  const int lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  const int words = head_dim / 2;
  // One warp a head: a decode step's few rows still spread over the GPU (a block a row, its warps
  // taking the heads in turn, left one row's 36 heads of Qwen3-30B-A3B to 4 warps: 7 µs a layer).
  const int h = blockIdx.y * warps + (threadIdx.x >> 5);
  if (h < normed_heads) {
    unsigned int* head = qkv + ((long long)blockIdx.x * row_width + (long long)h * head_dim) / 2;
    const unsigned int* w = h < num_heads ? q_w : h < num_heads + num_kv_heads ? k_w : v_w;
    float ss = 0.f;
    for (int i = lane; i < words; i += 32) {
      const unsigned int v = head[i];
      ss += bf16x2_lo(v) * bf16x2_lo(v) + bf16x2_hi(v) * bf16x2_hi(v);
    }
    const float inv = rsqrtf(warp_sum(ss) / head_dim + eps);
    for (int i = lane; i < words; i += 32) {
      const unsigned int v = head[i], g = w[i];
      head[i] = pack_bf16x2(bf16x2_lo(v) * inv * bf16x2_lo(g), bf16x2_hi(v) * inv * bf16x2_hi(g));
    }
  }
}
