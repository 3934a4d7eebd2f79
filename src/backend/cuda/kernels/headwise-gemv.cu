// Decode-sized per-head linear (MLA's absorbed projections): out [ROWS, heads * n], head h's block
// = x[:, h * width .. h * width + k] . w[h]^T with w [heads, n, k]. Like gemv.cu, its job is to
// stream w at the memory's speed: the heads' matrices are one [heads * n, k] array, a warp takes
// RW consecutive rows of it (all of one head, since n % RW == 0) with RW 16-byte loads in flight per
// lane, not allocated in L1 (each weight byte is read once), while x, re-read by every warp of a
// head, stays cached. ROWS (the batch rows, compiled per count) reuse each weight load.
#include "common.cuh"

// nvcc-check: -DROWS=1
// nvcc-check: -DROWS=4

#ifndef ROWS
#define ROWS 1
#endif
#define RW 8

// grid ceil(heads * n / (RW * 4)), block 128; k8 = k / 8; width and k multiples of 8, n of RW. The
// minimum of one block per multiprocessor lifts ptxas's register cap, which spilled at 4 rows (96).
extern "C" __global__ void __launch_bounds__(128, 1) headwise_gemv_kernel(bf16* __restrict__ out, const bf16* __restrict__ x,
                                                                       const uint4* __restrict__ w, int heads, int n, int k8, int width) {
  PDL_PROLOGUE();
  const int lane = threadIdx.x & 31;
  const int row0 = (blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5)) * RW;
  if (row0 >= heads * n) return;
  const int h = row0 / n;
  const long long x_row = (long long)heads * width / 8;  // one batch row of x, in 16-byte chunks
  const uint4* xh = reinterpret_cast<const uint4*>(x) + (long long)h * width / 8;
  const uint4* wr = w + (long long)row0 * k8;
  float acc[ROWS][RW];
#pragma unroll
  for (int r = 0; r < ROWS; r++)
#pragma unroll
    for (int i = 0; i < RW; i++) acc[r][i] = 0.f;
  for (int c = lane; c < k8; c += 32) {
    uint4 wv[RW];
#pragma unroll
    for (int i = 0; i < RW; i++) wv[i] = load_streaming(wr + (long long)i * k8 + c);
    float xf[ROWS][8];
#pragma unroll
    for (int r = 0; r < ROWS; r++) unpack8(xh[r * x_row + c], xf[r]);
#pragma unroll
    for (int i = 0; i < RW; i++) {
      float wf[8];
      unpack8(wv[i], wf);
#pragma unroll
      for (int r = 0; r < ROWS; r++)
#pragma unroll
        for (int e = 0; e < 8; e++) acc[r][i] = fmaf(wf[e], xf[r][e], acc[r][i]);
    }
  }
#pragma unroll
  for (int r = 0; r < ROWS; r++)
#pragma unroll
    for (int i = 0; i < RW; i++) acc[r][i] = warp_sum(acc[r][i]);
  if (lane != 0) return;
#pragma unroll
  for (int r = 0; r < ROWS; r++)
#pragma unroll
    for (int i = 0; i < RW; i++) out[(long long)r * heads * n + row0 + i] = f32_to_bf16(acc[r][i]);
}
