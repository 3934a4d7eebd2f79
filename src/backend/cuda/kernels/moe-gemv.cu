// Expert MLPs of decode-sized steps (at most 8 tokens), GEMV-style: a warp streams one weight row
// (gate and up rows together for the up projection) with 16-byte loads that skip L1, several in
// flight per lane, and applies it to every row of its tile, so an expert's weights are read once
// per step and only the chosen experts' are read at all. Tiles come from moe_route_kernel: one
// per active expert, holding every pair routed to it (TOK = the step's token count bounds them).
//
// MXFP4=1 reads experts packed in MXFP4 (mxfp4.cuh): a 16-byte chunk is then one block of 32
// values with its scale code in w_scales (the chunk's index), instead of 8 bf16 values; a chunk's
// products are summed before its scale multiplies them (a power of two: exact).
//
// QUANT reads experts in Keel's quantized layout (src/tensor/quantized-weight.ts), stacked expert
// after expert along the rows: 1 int4 (a 16-byte chunk is 4 words of 8 codes, columns 0,2,4,6 in
// nibbles 0..3 and 1,3,5,7 in 4..7: 32 values), 2 int8 and 3 fp8 e4m3 (16 values); w_scales
// [rows, groups] f32 and, with ZEROS=1, w_zeros [rows, groups] u8 (else the symmetric zero, 8 or
// 128). A chunk lies in one group (group_chunks chunks a group): its codes less the zero are
// summed against the activations, then the sum is multiplied by the group's scale once.
#include "common.cuh"
#include "gated-activation.cuh"
#include "moe.cuh"
#include "mxfp4.cuh"

// nvcc-check: -DTOK=1 -DTOPK=8 -DACT=0
// nvcc-check: -DTOK=8 -DTOPK=2 -DACT=2
// nvcc-check: -DTOK=4 -DTOPK=1 -DACT=1
// nvcc-check: -DTOK=1 -DACT=2 -DMXFP4=1
// nvcc-check: -DTOK=8 -DACT=2 -DMXFP4=1
// The down kernels' builds name no activation:
// nvcc-check: -DTOPK=6
// nvcc-check: -DTOK=4
// nvcc-check: -DTOPK=4 -DMXFP4=1
// nvcc-check: -DTOK=3 -DMXFP4=1
// nvcc-check: -DTOK=1 -DACT=0 -DQUANT=1 -DZEROS=1
// nvcc-check: -DTOK=8 -DACT=0 -DQUANT=2 -DZEROS=0
// nvcc-check: -DTOK=2 -DACT=1 -DQUANT=3
// nvcc-check: -DTOPK=8 -DQUANT=1 -DZEROS=0
// nvcc-check: -DTOPK=2 -DQUANT=2 -DZEROS=1
// nvcc-check: -DTOK=5 -DQUANT=3
// nvcc-check: -DTOK=8 -DQUANT=1 -DZEROS=1

#ifndef TOK
#define TOK 1
#endif
#ifndef TOPK
#define TOPK 1
#endif
#ifndef MXFP4
#define MXFP4 0
#endif
#ifndef QUANT
#define QUANT 0
#endif
#ifndef ZEROS
#define ZEROS 0
#endif
#define WARPS 4
#define THREADS (32 * WARPS)
// Weight values in one 16-byte chunk, and the 16-byte chunks of activations they multiply.
#define VALS (MXFP4 || QUANT == 1 ? 32 : QUANT ? 16 : 8)
#define X_CHUNKS (VALS / 8)

__device__ __forceinline__ float dot8(const float* a, const float* b) {
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < 8; i++) s = fmaf(a[i], b[i], s);
  return s;
}

// One 32-bit word of quantized codes as floats in column order, less the zero code (fp8: value / 2^8).
__device__ __forceinline__ void decode_code_word(unsigned int word, float zero, float* w) {
#if QUANT == 1
#pragma unroll
  for (int s = 0; s < 4; s++) {
    const unsigned int t = (word >> (4 * s)) & 0x000f000fu;
    w[2 * s] = (float)(t & 0xffffu) - zero;
    w[2 * s + 1] = (float)(t >> 16) - zero;
  }
#elif QUANT == 2
#pragma unroll
  for (int b = 0; b < 4; b++) w[b] = (float)((word >> (8 * b)) & 0xffu) - zero;
#else
#pragma unroll
  for (int b = 0; b < 4; b++) w[b] = e4m3_over_256((word >> (8 * b)) & 0xffu);
#endif
}

// A chunk of weights as floats (MXFP4: times 2^-14, which chunk_scale undoes; QUANT: codes less
// `zero`, fp8 values / 2^8).
__device__ __forceinline__ void decode_chunk(const uint4 v, float* w, float zero) {
#if MXFP4
  mxfp4_decode32(v, w);
#elif QUANT
  const unsigned int words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; i++) decode_code_word(words[i], zero, w + i * (VALS / 4));
#else
  unpack8(v, w);
#endif
}

// Where chunk c of weight row `row` finds its scale and zero: its (row, group) for QUANT, its
// block for MXFP4 (kc chunks a row).
__device__ __forceinline__ long long chunk_group(long long row, int c, int kc, int group_chunks, int groups) {
#if QUANT
  return row * groups + c / group_chunks;
#else
  return row * kc + c;
#endif
}

// The zero code of a chunk's group (0 for formats without one).
__device__ __forceinline__ float chunk_zero(const unsigned char* zeros, long long group) {
#if ZEROS
  return (float)zeros[group];
#elif QUANT == 1
  return 8.f;
#elif QUANT == 2
  return 128.f;
#else
  return 0.f;
#endif
}

// What multiplies a chunk's sum: MXFP4's block scale (undoing decode_chunk's 2^-14), the group's
// f32 scale (fp8: times 2^8, undoing its decoding's 2^-8), or 1.
__device__ __forceinline__ float chunk_scale(const void* scales, long long group) {
#if MXFP4
  return mxfp4_scale_2p14(((const unsigned char*)scales)[group]);
#elif QUANT == 3
  return 256.f * ((const float*)scales)[group];
#elif QUANT
  return ((const float*)scales)[group];
#else
  return 1.f;
#endif
}

// Σ over a chunk of w · x, x the X_CHUNKS 16-byte chunks of bf16 activations at xc.
__device__ __forceinline__ float dot_chunk(const float* w, const uint4* xc) {
  float s = 0.f;
#pragma unroll
  for (int j = 0; j < X_CHUNKS; j++) {
    float xf[8];
    unpack8(xc[j], xf);
    s += dot8(w + 8 * j, xf);
  }
  return s;
}

// acc += sum times the chunk's scale (MXFP4, QUANT), or acc += sum (bf16, as the kernels always added).
__device__ __forceinline__ float add_scaled(float acc, float sum, float scale) {
#if MXFP4 || QUANT
  return fmaf(sum, scale, acc);
#else
  return acc + sum;
#endif
}

// The up projection applies the activation, a compile-time choice (ACT): the down kernels' builds,
// which name none, leave it out.
#ifdef ACT
// grid (ceil(n / WARPS), tiles), block THREADS. Warp j of the grid's x gives column j of every
// row of its tile: h[place, j] = act(x_token · gate_j + bg_j, x_token · up_j + bu_j), the two
// products rounded to bf16 first. x [tokens, k]; w [count, 2n, k] (MXFP4: its blocks, w_scales
// [count, 2n, k / 32]; QUANT: its codes, w_scales and w_zeros [count · 2n, groups]; else null);
// bias [count, 2n] or null; kc = k / VALS chunks a row, group_chunks of them a scale group.
extern "C" __global__ void __launch_bounds__(THREADS) moe_gate_up_gemv_kernel(
    bf16* __restrict__ h, const uint4* __restrict__ x, const uint4* __restrict__ w, const void* __restrict__ w_scales,
    const unsigned char* __restrict__ w_zeros, const bf16* __restrict__ bias, const int* __restrict__ sorted_pairs,
    const int* __restrict__ offsets, const int* __restrict__ tile_start, const int* __restrict__ tiles, int first, int count, int top_k,
    int n, int kc, int group_chunks, int groups, float alpha, float limit) {
  PDL_PROLOGUE();
  constexpr int UNROLL = 4;  // x 2 matrices: 8 weight loads in flight per lane
  int expert, start, rows;
  if (!local_tile(tile_start, tiles, offsets, first, count, TOK, expert, start, rows)) return;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int j = blockIdx.x * WARPS + warp;
  if (j >= n) return;
  const long long gate_row = (long long)expert * 2 * n + j, up_row = gate_row + n;
  const uint4* wg = w + gate_row * kc;
  const uint4* wu = w + up_row * kc;
  const uint4* xr[TOK];
  float ag[TOK], au[TOK];
#pragma unroll
  for (int r = 0; r < TOK; r++) {
    xr[r] = x + (long long)(r < rows ? sorted_pairs[start + r] / top_k : 0) * kc * X_CHUNKS;
    ag[r] = au[r] = 0.f;
  }
  for (int base = 0; base < kc; base += 32 * UNROLL) {
    uint4 vg[UNROLL], vu[UNROLL];
#pragma unroll
    for (int u = 0; u < UNROLL; u++) {
      const int c = base + u * 32 + lane;
      vg[u] = c < kc ? load_streaming(wg + c) : make_uint4(0u, 0u, 0u, 0u);
      vu[u] = c < kc ? load_streaming(wu + c) : make_uint4(0u, 0u, 0u, 0u);
    }
#pragma unroll
    for (int u = 0; u < UNROLL; u++) {
      const int c = base + u * 32 + lane;
      if (c < kc) {
        const long long gg = chunk_group(gate_row, c, kc, group_chunks, groups), gu = chunk_group(up_row, c, kc, group_chunks, groups);
        float fg[VALS], fu[VALS];
        decode_chunk(vg[u], fg, chunk_zero(w_zeros, gg));
        decode_chunk(vu[u], fu, chunk_zero(w_zeros, gu));
        const float sg = chunk_scale(w_scales, gg), su = chunk_scale(w_scales, gu);
#pragma unroll
        for (int r = 0; r < TOK; r++) {
          if (r < rows) {
            ag[r] = add_scaled(ag[r], dot_chunk(fg, xr[r] + (long long)c * X_CHUNKS), sg);
            au[r] = add_scaled(au[r], dot_chunk(fu, xr[r] + (long long)c * X_CHUNKS), su);
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
// every row of the tile. h [pairs, n] in expert-sorted order; w [count, hidden, n] (MXFP4 with
// w_scales [count, hidden, n / 32]; QUANT with w_scales and w_zeros [count · hidden, groups]);
// bias [count, hidden] or null; nc = n / VALS, group_chunks of them a scale group.
extern "C" __global__ void __launch_bounds__(THREADS) moe_down_gemv_kernel(
    bf16* __restrict__ y, const uint4* __restrict__ h, const uint4* __restrict__ w, const void* __restrict__ w_scales,
    const unsigned char* __restrict__ w_zeros, const bf16* __restrict__ bias, const int* __restrict__ offsets,
    const int* __restrict__ tile_start, const int* __restrict__ tiles, int first, int count, int hidden, int nc, int group_chunks, int groups) {
  PDL_PROLOGUE();
  constexpr int UNROLL = 8;
  int expert, start, rows;
  if (!local_tile(tile_start, tiles, offsets, first, count, TOK, expert, start, rows)) return;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int i = blockIdx.x * WARPS + warp;
  if (i >= hidden) return;
  const long long w_row = (long long)expert * hidden + i;
  const uint4* wr = w + w_row * nc;
  float acc[TOK];
#pragma unroll
  for (int r = 0; r < TOK; r++) acc[r] = 0.f;
  for (int base = 0; base < nc; base += 32 * UNROLL) {
    uint4 v[UNROLL];
#pragma unroll
    for (int u = 0; u < UNROLL; u++) {
      const int c = base + u * 32 + lane;
      v[u] = c < nc ? load_streaming(wr + c) : make_uint4(0u, 0u, 0u, 0u);
    }
#pragma unroll
    for (int u = 0; u < UNROLL; u++) {
      const int c = base + u * 32 + lane;
      if (c < nc) {
        const long long g = chunk_group(w_row, c, nc, group_chunks, groups);
        float fw[VALS];
        decode_chunk(v[u], fw, chunk_zero(w_zeros, g));
        const float sc = chunk_scale(w_scales, g);
#pragma unroll
        for (int r = 0; r < TOK; r++) {
          if (r < rows) acc[r] = add_scaled(acc[r], dot_chunk(fw, h + ((long long)(start + r) * nc + c) * X_CHUNKS), sc);
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
// + b_i). All slots' loads are issued together. ids, weights, pair_pos [tokens, TOPK] from the router;
// w, w_scales and w_zeros as moe_down_gemv_kernel's.
extern "C" __global__ void __launch_bounds__(THREADS) moe_down_combine_gemv_kernel(
    bf16* __restrict__ out, const uint4* __restrict__ h, const uint4* __restrict__ w, const void* __restrict__ w_scales,
    const unsigned char* __restrict__ w_zeros, const bf16* __restrict__ bias, const int* __restrict__ ids, const float* __restrict__ weights,
    const int* __restrict__ pair_pos, int first, int count, int hidden, int nc, int group_chunks, int groups) {
  PDL_PROLOGUE();
  constexpr int UNROLL = TOPK >= 8 ? 1 : 8 / TOPK;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int i = blockIdx.x * WARPS + warp, t = blockIdx.y;
  if (i >= hidden) return;
  long long w_row[TOPK];
  const uint4* hr[TOPK];
  int local[TOPK];
  float acc[TOPK];
#pragma unroll
  for (int s = 0; s < TOPK; s++) {
    const int pair = t * TOPK + s;
    const int e = ids[pair] - first;
    local[s] = e >= 0 && e < count ? e : -1;
    w_row[s] = (long long)(local[s] < 0 ? 0 : local[s]) * hidden + i;
    hr[s] = h + (long long)(local[s] < 0 ? 0 : pair_pos[pair]) * nc * X_CHUNKS;
    acc[s] = 0.f;
  }
  for (int base = 0; base < nc; base += 32 * UNROLL) {
    uint4 v[TOPK][UNROLL];
#pragma unroll
    for (int s = 0; s < TOPK; s++)
#pragma unroll
      for (int u = 0; u < UNROLL; u++) {
        const int c = base + u * 32 + lane;
        v[s][u] = local[s] >= 0 && c < nc ? load_streaming(w + w_row[s] * nc + c) : make_uint4(0u, 0u, 0u, 0u);
      }
#pragma unroll
    for (int s = 0; s < TOPK; s++)
#pragma unroll
      for (int u = 0; u < UNROLL; u++) {
        const int c = base + u * 32 + lane;
        if (local[s] >= 0 && c < nc) {
          const long long g = chunk_group(w_row[s], c, nc, group_chunks, groups);
          float fw[VALS];
          decode_chunk(v[s][u], fw, chunk_zero(w_zeros, g));
          acc[s] = add_scaled(acc[s], dot_chunk(fw, hr[s] + (long long)c * X_CHUNKS), chunk_scale(w_scales, g));
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
