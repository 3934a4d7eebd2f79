// Expert MLPs of decode-sized steps (at most 8 tokens), GEMV-style: a warp streams one weight row
// (gate and up rows together for the up projection) with 16-byte loads that skip L1, several in
// flight per lane, and applies it to every row of its tile, so an expert's weights are read once
// per step and only the chosen experts' are read at all. Tiles come from moe_route_kernel: one
// per active expert, holding every pair routed to it (TOK = the step's token count bounds them).
#include "common.cuh"
#include "gated-activation.cuh"
#include "moe.cuh"

// nvcc-check: -DTOK=1 -DTOPK=8 -DACT=0
// nvcc-check: -DTOK=8 -DTOPK=2 -DACT=2
// nvcc-check: -DTOK=4 -DTOPK=1 -DACT=1
// The down kernels' builds name no activation:
// nvcc-check: -DTOPK=6
// nvcc-check: -DTOK=4

#ifndef TOK
#define TOK 1
#endif
#ifndef TOPK
#define TOPK 1
#endif
#define WARPS 4
#define THREADS (32 * WARPS)

__device__ __forceinline__ float dot8(const float* a, const float* b) {
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < 8; i++) s = fmaf(a[i], b[i], s);
  return s;
}

// The up projection applies the activation, a compile-time choice (ACT): the down kernels' builds,
// which name none, leave it out.
#ifdef ACT
// grid (ceil(n / WARPS), tiles), block THREADS. Warp j of the grid's x gives column j of every
// row of its tile: h[place, j] = act(x_token · gate_j + bg_j, x_token · up_j + bu_j), the two
// products rounded to bf16 first. x [tokens, k]; w [count, 2n, k]; bias [count, 2n] or null; k8 = k / 8.
extern "C" __global__ void __launch_bounds__(THREADS) moe_gate_up_gemv_kernel(
    bf16* __restrict__ h, const uint4* __restrict__ x, const uint4* __restrict__ w, const bf16* __restrict__ bias,
    const int* __restrict__ sorted_pairs, const int* __restrict__ offsets, const int* __restrict__ tile_start,
    const int* __restrict__ tiles, int first, int count, int top_k, int n, int k8, float alpha, float limit) {
  constexpr int UNROLL = 4;  // x 2 matrices: 8 weight loads in flight per lane
  int expert, start, rows;
  if (!local_tile(tile_start, tiles, offsets, first, count, TOK, expert, start, rows)) return;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int j = blockIdx.x * WARPS + warp;
  if (j >= n) return;
  const uint4* wg = w + ((long long)expert * 2 * n + j) * k8;
  const uint4* wu = wg + (long long)n * k8;
  const uint4* xr[TOK];
  float ag[TOK], au[TOK];
#pragma unroll
  for (int r = 0; r < TOK; r++) {
    xr[r] = x + (long long)(r < rows ? sorted_pairs[start + r] / top_k : 0) * k8;
    ag[r] = au[r] = 0.f;
  }
  for (int base = 0; base < k8; base += 32 * UNROLL) {
    uint4 vg[UNROLL], vu[UNROLL];
#pragma unroll
    for (int u = 0; u < UNROLL; u++) {
      const int c = base + u * 32 + lane;
      vg[u] = c < k8 ? load_streaming(wg + c) : make_uint4(0u, 0u, 0u, 0u);
      vu[u] = c < k8 ? load_streaming(wu + c) : make_uint4(0u, 0u, 0u, 0u);
    }
#pragma unroll
    for (int u = 0; u < UNROLL; u++) {
      const int c = base + u * 32 + lane;
      if (c < k8) {
        float fg[8], fu[8];
        unpack8(vg[u], fg);
        unpack8(vu[u], fu);
#pragma unroll
        for (int r = 0; r < TOK; r++) {
          if (r < rows) {
            float xf[8];
            unpack8(xr[r][c], xf);
            ag[r] += dot8(fg, xf);
            au[r] += dot8(fu, xf);
          }
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < TOK; r++) {
    ag[r] = warp_sum(ag[r]);
    au[r] = warp_sum(au[r]);
  }
  if (lane != 0) return;
  const float bg = bias == nullptr ? 0.f : bf16_to_f32(bias[(long long)expert * 2 * n + j]);
  const float bu = bias == nullptr ? 0.f : bf16_to_f32(bias[(long long)expert * 2 * n + n + j]);
#pragma unroll
  for (int r = 0; r < TOK; r++) {
    if (r < rows) {
      const float g = bf16_to_f32(f32_to_bf16(ag[r] + bg)), u = bf16_to_f32(f32_to_bf16(au[r] + bu));
      h[(long long)(start + r) * n + j] = f32_to_bf16(gated_activation(g, u, alpha, limit));
    }
  }
}
#endif

// grid (ceil(hidden / WARPS), tiles), block THREADS: y[place, i] = h[place] · down_i + b_i for
// every row of the tile. h [pairs, n] in expert-sorted order; w [count, hidden, n]; bias [count,
// hidden] or null; n8 = n / 8.
extern "C" __global__ void __launch_bounds__(THREADS) moe_down_gemv_kernel(
    bf16* __restrict__ y, const uint4* __restrict__ h, const uint4* __restrict__ w, const bf16* __restrict__ bias,
    const int* __restrict__ offsets, const int* __restrict__ tile_start, const int* __restrict__ tiles, int first, int count,
    int hidden, int n8) {
  constexpr int UNROLL = 8;
  int expert, start, rows;
  if (!local_tile(tile_start, tiles, offsets, first, count, TOK, expert, start, rows)) return;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int i = blockIdx.x * WARPS + warp;
  if (i >= hidden) return;
  const uint4* wr = w + ((long long)expert * hidden + i) * n8;
  float acc[TOK];
#pragma unroll
  for (int r = 0; r < TOK; r++) acc[r] = 0.f;
  for (int base = 0; base < n8; base += 32 * UNROLL) {
    uint4 v[UNROLL];
#pragma unroll
    for (int u = 0; u < UNROLL; u++) {
      const int c = base + u * 32 + lane;
      v[u] = c < n8 ? load_streaming(wr + c) : make_uint4(0u, 0u, 0u, 0u);
    }
#pragma unroll
    for (int u = 0; u < UNROLL; u++) {
      const int c = base + u * 32 + lane;
      if (c < n8) {
        float fw[8];
        unpack8(v[u], fw);
#pragma unroll
        for (int r = 0; r < TOK; r++) {
          if (r < rows) {
            float fh[8];
            unpack8(h[(long long)(start + r) * n8 + c], fh);
            acc[r] += dot8(fw, fh);
          }
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < TOK; r++) acc[r] = warp_sum(acc[r]);
  if (lane != 0) return;
  const float b = bias == nullptr ? 0.f : bf16_to_f32(bias[(long long)expert * hidden + i]);
#pragma unroll
  for (int r = 0; r < TOK; r++) {
    if (r < rows) y[(long long)(start + r) * hidden + i] = f32_to_bf16(acc[r] + b);
  }
}

// A single token's down projections fused with the weighted sum (so no per-pair output and no
// combine launch): grid (ceil(hidden / WARPS), tokens), block THREADS; warp i of token t gives
// out[t, i] = Σ over its TOPK slots held here, in expert order, of weight · round(h[place] · down_i
// + b_i). All slots' loads are issued together. ids, weights, pair_pos [tokens, TOPK] from the router.
extern "C" __global__ void __launch_bounds__(THREADS) moe_down_combine_gemv_kernel(
    bf16* __restrict__ out, const uint4* __restrict__ h, const uint4* __restrict__ w, const bf16* __restrict__ bias,
    const int* __restrict__ ids, const float* __restrict__ weights, const int* __restrict__ pair_pos, int first, int count,
    int hidden, int n8) {
  constexpr int UNROLL = TOPK >= 8 ? 1 : 8 / TOPK;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int i = blockIdx.x * WARPS + warp, t = blockIdx.y;
  if (i >= hidden) return;
  const uint4* wr[TOPK];
  const uint4* hr[TOPK];
  int local[TOPK];
  float acc[TOPK];
#pragma unroll
  for (int s = 0; s < TOPK; s++) {
    const int pair = t * TOPK + s;
    const int e = ids[pair] - first;
    local[s] = e >= 0 && e < count ? e : -1;
    wr[s] = w + ((long long)(local[s] < 0 ? 0 : local[s]) * hidden + i) * n8;
    hr[s] = h + (long long)(local[s] < 0 ? 0 : pair_pos[pair]) * n8;
    acc[s] = 0.f;
  }
  for (int base = 0; base < n8; base += 32 * UNROLL) {
    uint4 v[TOPK][UNROLL];
#pragma unroll
    for (int s = 0; s < TOPK; s++)
#pragma unroll
      for (int u = 0; u < UNROLL; u++) {
        const int c = base + u * 32 + lane;
        v[s][u] = local[s] >= 0 && c < n8 ? load_streaming(wr[s] + c) : make_uint4(0u, 0u, 0u, 0u);
      }
#pragma unroll
    for (int s = 0; s < TOPK; s++)
#pragma unroll
      for (int u = 0; u < UNROLL; u++) {
        const int c = base + u * 32 + lane;
        if (local[s] >= 0 && c < n8) {
          float fw[8], fh[8];
          unpack8(v[s][u], fw);
          unpack8(hr[s][c], fh);
          acc[s] += dot8(fw, fh);
        }
      }
  }
  float total = 0.f;
#pragma unroll
  for (int s = 0; s < TOPK; s++) {
    const float dot = warp_sum(acc[s]);
    if (local[s] >= 0) {
      const float b = bias == nullptr ? 0.f : bf16_to_f32(bias[(long long)local[s] * hidden + i]);
      total += weights[t * TOPK + s] * bf16_to_f32(f32_to_bf16(dot + b));
    }
  }
  if (lane == 0) out[(long long)t * hidden + i] = f32_to_bf16(total);
}
