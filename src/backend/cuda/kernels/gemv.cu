// Decode-sized GEMM: out [ROWS, n] = x [ROWS, k] · w [n, k]^T (+ bias), bf16 in and out, f32
// accumulation. A decode step reads every weight once per token, so the job is to stream w at the
// memory's speed: KSPLIT warps per weight row (1, or 4 for matrices of few rows), 16-byte loads, 8
// of them in flight per lane, marked not to allocate in L1 (each weight byte is read once) while x,
// re-read by every warp, stays cached. ROWS (the batch rows, compiled per count) reuse each weight
// load. GATED=1 is the MLP's up projection fused with its activation: w is [2n, k] (gate rows, then
// up rows), each row pair j, j + n gives act(gate) * up (ACT, gated-activation.cuh), both products
// rounded to bf16 first as the unfused ops would. OUT_F32=1 writes the f32 sums (plus the bias)
// unrounded: an MoE router's logits, whose top-k choice a bf16 rounding of them can flip.
#include "common.cuh"
#include "gated-activation.cuh"

// nvcc-check: -DROWS=1
// nvcc-check: -DROWS=2 -DGATED=1 -DACT=0
// nvcc-check: -DROWS=1 -DGATED=1 -DACT=1 -DKSPLIT=4
// nvcc-check: -DROWS=2 -DGATED=1 -DACT=2
// nvcc-check: -DROWS=2 -DKSPLIT=4
// nvcc-check: -DROWS=2 -DKSPLIT=4 -DOUT_F32=1

#ifndef ROWS
#define ROWS 1
#endif
#ifndef GATED
#define GATED 0
#endif
#define MATS (GATED ? 2 : 1)
#ifndef OUT_F32
#define OUT_F32 0
#endif
#if OUT_F32 && GATED
#error "the gated form writes bf16 only"
#endif
#if OUT_F32
typedef float out_t;
#else
typedef bf16 out_t;
#endif
#ifndef KSPLIT
#define KSPLIT 1
#endif
#if GATED && !defined(ACT)
#error "the gated form needs -DACT=<0 silu | 1 gelu-tanh | 2 clamped swiglu | 3 gelu | 4 relu> (gated-activation.cuh)"
#endif
// Eight 16-byte weight loads in flight per lane, whatever MATS (on the H100 the gated form, 2 x 4,
// streamed at 3.1 TB/s where the plain one at 4 read the 4096-row matrices at 2.3-2.5).
#define UNROLL (8 / MATS)

__device__ __forceinline__ float dot8(const float* a, const float* b) {
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < 8; i++) s = fmaf(a[i], b[i], s);
  return s;
}

// The weight row and the slice of its k8 16-byte chunks [c_begin, c_end) a warp sums; `active`
// false for a warp past the last row. Slices start on whole warps of chunks, so every load of a
// warp stays coalesced.
struct WarpSlice {
  int row, c_begin, c_end;
  bool active;
};
__device__ __forceinline__ WarpSlice warp_slice(int n, int k8) {
  const int warp = threadIdx.x >> 5;
  const int row = blockIdx.x * ((blockDim.x >> 5) / KSPLIT) + warp / KSPLIT;
  const int span = ((k8 + KSPLIT - 1) / KSPLIT + 31) / 32 * 32;
  const int c_begin = (warp % KSPLIT) * span;
  return {row, c_begin, min(k8, c_begin + span), row < n};
}

// The lines of the warp's first round of weight loads, into L2 before the wait on the kernel
// before: a 128-byte line holds 8 chunks, so lanes 0, 8, 16 and 24 name the round's lines.
__device__ __forceinline__ void prefetch_first_round(const uint4* w, int n, int k8) {
  const WarpSlice s = warp_slice(n, k8);
  const int lane = threadIdx.x & 31;
  if (!s.active || (lane & 7) != 0) return;
#pragma unroll
  for (int m = 0; m < MATS; m++)
#pragma unroll
    for (int u = 0; u < UNROLL; u++) {
      const int c = s.c_begin + u * 32 + lane;
      if (c < s.c_end) prefetch_l2(w + ((long long)s.row + (long long)m * n) * k8 + c);
    }
}

// grid ceil(n * KSPLIT / warps per block), block a multiple of 32 * KSPLIT; n output columns;
// k8 = k / 8; bias (not with GATED) may be null. KSPLIT warps share a row, each summing a slice of
// k, so that a matrix of few rows still has enough warps, each with a short chain of loads.
// alpha and limit are the clamped SwiGLU's (GATED with ACT=2 only).
extern "C" __global__ void __launch_bounds__(128) gemv_kernel(out_t* __restrict__ out, const uint4* __restrict__ x, const uint4* __restrict__ w,
                                                              const bf16* __restrict__ bias, int n, int k8, float alpha, float limit) {
  PDL_PREFETCH(prefetch_first_round(w, n, k8));
  PDL_PROLOGUE();
  const int lane = threadIdx.x & 31;
  const auto [row, c_begin, c_end, active] = warp_slice(n, k8);
  const uint4* w_rows[MATS];
#pragma unroll
  for (int m = 0; m < MATS; m++) w_rows[m] = w + ((long long)(active ? row : 0) + (long long)m * n) * k8;
  float acc[MATS][ROWS];
#pragma unroll
  for (int m = 0; m < MATS; m++)
#pragma unroll
    for (int r = 0; r < ROWS; r++) acc[m][r] = 0.f;
  for (int base = c_begin; active && base < c_end; base += 32 * UNROLL) {
    uint4 wv[MATS][UNROLL];
#pragma unroll
    for (int u = 0; u < UNROLL; u++) {
      const int c = base + u * 32 + lane;
#pragma unroll
      for (int m = 0; m < MATS; m++) wv[m][u] = c < c_end ? load_streaming(w_rows[m] + c) : make_uint4(0u, 0u, 0u, 0u);
    }
#pragma unroll
    for (int u = 0; u < UNROLL; u++) {
      const int c = base + u * 32 + lane;
      if (c < c_end) {
#pragma unroll
        for (int r = 0; r < ROWS; r++) {
          float xf[8];
          unpack8(x[(long long)r * k8 + c], xf);
#pragma unroll
          for (int m = 0; m < MATS; m++) {
            float wf[8];
            unpack8(wv[m][u], wf);
            acc[m][r] += dot8(wf, xf);
          }
        }
      }
    }
  }
#pragma unroll
  for (int m = 0; m < MATS; m++)
#pragma unroll
    for (int r = 0; r < ROWS; r++) acc[m][r] = warp_sum(acc[m][r]);
#if KSPLIT > 1
  // The first warp of each row adds the other slices' sums, in slice order.
  const int warp = threadIdx.x >> 5;
  __shared__ float partial[4][MATS][ROWS];
  if (lane == 0) {
#pragma unroll
    for (int m = 0; m < MATS; m++)
#pragma unroll
      for (int r = 0; r < ROWS; r++) partial[warp][m][r] = acc[m][r];
  }
  __syncthreads();
  if (warp % KSPLIT != 0) return;
#pragma unroll
  for (int m = 0; m < MATS; m++)
#pragma unroll
    for (int r = 0; r < ROWS; r++)
      for (int s = 1; s < KSPLIT; s++) acc[m][r] += partial[warp + s][m][r];
#endif
  if (!active || lane != 0) return;
#if GATED
#pragma unroll
  for (int r = 0; r < ROWS; r++) {
    const float g = bf16_to_f32(f32_to_bf16(acc[0][r]));
    const float up = bf16_to_f32(f32_to_bf16(acc[1][r]));
    out[(long long)r * n + row] = f32_to_bf16(gated_activation(g, up, alpha, limit));
  }
#else
  const float b = bias == nullptr ? 0.f : bf16_to_f32(bias[row]);
#pragma unroll
  for (int r = 0; r < ROWS; r++) {
#if OUT_F32
    out[(long long)r * n + row] = acc[0][r] + b;
#else
    out[(long long)r * n + row] = f32_to_bf16(acc[0][r] + b);
#endif
  }
#endif
}
