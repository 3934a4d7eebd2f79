// int4 linear layers at decode batch sizes on the tensor cores: out [ROWS, n] bf16 = x [ROWS, k] ·
// Wᵀ (+ bias) for 1 ≤ ROWS ≤ 8, W int4 in Keel's row layout (quantized-linear.cu: each row's codes
// contiguous, a word's columns 0,2,4,6,1,3,5,7 in nibbles 0..7; f32 scales and optional u8 zeros
// per (row, group)), k and the group a multiple of 128 columns (or one group a row).
//
// quantized_gemv_kernel decodes each code to a float and multiplies it on the CUDA cores, about
// three instructions a code, which bounds it by instruction issue below the memory's rate. Here
// the decoded pairs go straight into mma.sync.m16n8k16 as the A operand, and a code costs its share
// of a shift and a lop3 (about one instruction), whatever the batch:
// - A warp takes 16 output rows (rows g and g + 8 of lane 4g + t) over steps of 128 columns: lane t
//   of each quad loads 16 bytes (32 codes) of its two rows at columns 128 s + 32 t. The order in
//   which an mma sums its 16 k slots is free as long as A and B agree on it: mma j of a step takes
//   from lane t the bf16 pairs 2j and 2j + 1 of its 32 columns (A slots 2t, 2t + 1 and 2t + 8,
//   2t + 9), and the B fragment of lane (g, t) is batch row g's activations at the same columns,
//   the 16-byte loads as they lie (zero for g ≥ ROWS).
// - (word >> 4p) & 0x000f000f | 0x43004300 is the bf16 pair (128 + q, 128 + q') of columns 2p,
//   2p + 1 of the word, exact. The zero point comes off once per step, not per code:
//   Σ (q - z) x = Σ (128 + q) x - (128 + z) Σ x, with Σ x from a second mma of the same B against
//   an all-ones A (each row of its result is Σ x). A step lies in one scale group, so it ends with
//   acc += s (D - (128 + z) Σ x) per output, in f32, as the CUDA-core kernel does per chunk.
// - A block is WK warps over the same 16 rows, taking UNROLL steps at a time in turn; their sums
//   meet in shared memory. With too few blocks to fill the GPU the steps are also split over
//   gridDim.y, each split writing f32 partial sums that quantized_gemv_reduce_kernel adds.
#include "common.cuh"
#include "mma.cuh"

// nvcc-check: -DROWS=1 -DZEROS=0
// nvcc-check: -DROWS=3 -DZEROS=1
// nvcc-check: -DROWS=8 -DZEROS=1

#ifndef ROWS
#define ROWS 1
#endif
#ifndef ZEROS
#define ZEROS 0
#endif
#if ROWS < 1 || ROWS > 8
#error "ROWS must be 1..8: the batch rows are the mma's 8 columns"
#endif

namespace {
constexpr int WK = 8;           // warps of a block, over the same 16 rows
constexpr int STEP_COLS = 128;  // columns of one step: 4 lanes of 32
constexpr int UNROLL = 2;       // steps a warp loads before it multiplies
constexpr unsigned int BF16X2_ONES = 0x3f803f80u;
static_assert(32 * WK == 256, "the launch bounds are the block");
}  // namespace

// The 32-bit word i (0..3) of a 16-byte load.
__device__ __forceinline__ unsigned int word_of(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

// Pair p (0..15) of a lane's 32 codes: columns 2p, 2p + 1 as bf16 (128 + q, 128 + q').
__device__ __forceinline__ unsigned int code_pair(const uint4& codes, int p) {
  return ((word_of(codes, p >> 2) >> (4 * (p & 3))) & 0x000f000fu) | 0x43004300u;
}

// grid (ceil(n / 16), splits), block 32 · WK = 256. Split y covers steps [y · split_steps, min(k / 128,
// (y + 1) · split_steps)) of every row. One split: out [ROWS, n] bf16 (+ bias). More: partial
// [splits, ROWS, n] f32 (no bias).
extern "C" __global__ void __launch_bounds__(256) int4_gemv_mma_kernel(bf16* __restrict__ out, float* __restrict__ partial, const bf16* __restrict__ x,
                                                                          const uint4* __restrict__ codes, const float* __restrict__ scales,
                                                                          const unsigned char* __restrict__ zeros, const bf16* __restrict__ bias, int n, int k,
                                                                          int groups, int group_size, int split_steps) {
  PDL_PROLOGUE();
  __shared__ float sums[WK][16][8];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;
  const int row0 = blockIdx.x * 16;
  // Rows past n read row n - 1 again and write nothing.
  const int rows[2] = {min(row0 + g, n - 1), min(row0 + g + 8, n - 1)};
  const int row_chunks = k / 32;
  const int s_begin = blockIdx.y * split_steps, s_end = min(k / STEP_COLS, s_begin + split_steps);
  const uint4* w[2] = {codes + (long long)rows[0] * row_chunks + t, codes + (long long)rows[1] * row_chunks + t};
  const bool has_x = g < ROWS;
  const uint4* xg = reinterpret_cast<const uint4*>(x + (long long)(has_x ? g : 0) * k) + 4 * t;
  const unsigned int ones[4] = {BF16X2_ONES, BF16X2_ONES, BF16X2_ONES, BF16X2_ONES};
  float acc[4] = {0.f, 0.f, 0.f, 0.f};

  for (int s0 = s_begin + warp * UNROLL; s0 < s_end; s0 += WK * UNROLL) {
    uint4 cw[UNROLL][2], xv[UNROLL][4];
#pragma unroll
    for (int u = 0; u < UNROLL; u++) {
      const int s = s0 + u;
      const bool live = s < s_end;
#pragma unroll
      for (int r = 0; r < 2; r++) cw[u][r] = live ? load_streaming(w[r] + 4 * s) : make_uint4(0u, 0u, 0u, 0u);
#pragma unroll
      for (int j = 0; j < 4; j++) xv[u][j] = live && has_x ? xg[16 * s + j] : make_uint4(0u, 0u, 0u, 0u);
    }
#pragma unroll
    for (int u = 0; u < UNROLL; u++) {
      const int s = s0 + u;
      if (s >= s_end) break;
      float d[4] = {0.f, 0.f, 0.f, 0.f}, sx[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
      for (int j = 0; j < 8; j++) {
        const unsigned int a[4] = {code_pair(cw[u][0], 2 * j), code_pair(cw[u][1], 2 * j), code_pair(cw[u][0], 2 * j + 1), code_pair(cw[u][1], 2 * j + 1)};
        const unsigned int b0 = word_of(xv[u][j >> 1], (2 * j) & 3), b1 = word_of(xv[u][j >> 1], (2 * j + 1) & 3);
        mma_bf16_16816(d, a, b0, b1);
        mma_bf16_16816(sx, ones, b0, b1);
      }
      // d: rows g (d[0], d[1]) and g + 8 (d[2], d[3]) at batch rows 2t, 2t + 1; sx[0], sx[1]: Σ x of those batch rows.
      const int group = s * STEP_COLS / group_size;
#pragma unroll
      for (int r = 0; r < 2; r++) {
        const long long gi = (long long)rows[r] * groups + group;
        const float scale = scales[gi];
        const float zero = 128.f + (ZEROS ? (float)zeros[gi] : 8.f);
#pragma unroll
        for (int c = 0; c < 2; c++) acc[2 * r + c] = fmaf(scale, fmaf(-zero, sx[c], d[2 * r + c]), acc[2 * r + c]);
      }
    }
  }

#pragma unroll
  for (int r = 0; r < 2; r++)
#pragma unroll
    for (int c = 0; c < 2; c++) sums[warp][g + 8 * r][2 * t + c] = acc[2 * r + c];
  __syncthreads();
  for (int i = threadIdx.x; i < 16 * ROWS; i += blockDim.x) {
    const int r = i / ROWS, b = i - r * ROWS, row = row0 + r;
    if (row >= n) continue;
    float v = 0.f;
#pragma unroll
    for (int wk = 0; wk < WK; wk++) v += sums[wk][r][b];
    if (gridDim.y > 1) {
      partial[((long long)blockIdx.y * ROWS + b) * n + row] = v;
    } else {
      out[(long long)b * n + row] = f32_to_bf16(v + (bias == nullptr ? 0.f : bf16_to_f32(bias[row])));
    }
  }
}
