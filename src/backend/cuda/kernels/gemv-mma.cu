// Quantized linear layers at decode batch sizes on the tensor cores: out [ROWS, n] bf16 = x [ROWS, k]
// · Wᵀ (+ bias) for 1 ≤ ROWS ≤ 8, W in Keel's row layout (quantized-linear.cu: each row's codes
// contiguous, f32 scales and optional u8 zeros per (row, group)), FORMAT 0 int4 (a word's columns
// 0,2,4,6,1,3,5,7 in nibbles 0..7) or 2 fp8 e4m3, k and the group a multiple of a step's columns
// (or one group a row).
//
// quantized_gemv_kernel decodes each code to a float and multiplies it on the CUDA cores, about
// three instructions an int4 code (six an fp8 one), which bounds it by instruction issue below the
// memory's rate. Here the decoded bf16 pairs go straight into mma.sync.m16n8k16 as the A operand,
// and a code costs its share of the decode alone, whatever the batch:
// - A warp takes 16 output rows (rows g and g + 8 of lane 4g + t) over steps of 4 × LANE_COLS
//   columns: lane t of each quad loads 16 bytes (LANE_COLS codes) of its two rows at columns
//   STEP_COLS s + LANE_COLS t. The order in which an mma sums its 16 k slots is free as long as A
//   and B agree on it: mma j of a step takes from lane t the bf16 pairs 2j and 2j + 1 of its columns
//   (A slots 2t, 2t + 1 and 2t + 8, 2t + 9), and the B fragment of lane (g, t) is batch row g's
//   activations at the same columns, the 16-byte loads as they lie (zero for g ≥ ROWS).
// - int4: (word >> 4p) & 0x000f000f | 0x43004300 is the bf16 pair (128 + q, 128 + q') of columns
//   2p, 2p + 1 of the word, exact. The zero point comes off once per step, not per code:
//   Σ (q - z) x = Σ (128 + q) x - (128 + z) Σ x, with Σ x from a second mma of the same B against
//   an all-ones A (each row of its result is Σ x).
// - fp8: a byte permute puts two codes in the high bytes of a pair's halves, and their 7
//   exponent/mantissa bits shifted under bf16's exponent field give each value / 2^120 (normal and
//   subnormal alike, as marlin-gemm.cu decodes them), times 2^120 in bf16: exact and normal.
// - A step lies in one scale group, so it ends with acc += s (D - (128 + z) Σ x) (int4) or s D
//   (fp8) per output, in f32. A block is WK warps over the same 16 rows, taking UNROLL steps at a
//   time in turn; their sums meet in shared memory. With too few blocks to fill the GPU the steps
//   are also split over gridDim.y, and the last split of a block's rows adds the splits' f32
//   partial sums (split-k.cuh).
#include "common.cuh"
#include "mma.cuh"
#include "split-k.cuh"

// nvcc-check: -DFORMAT=0 -DROWS=1 -DZEROS=0
// nvcc-check: -DFORMAT=0 -DROWS=3 -DZEROS=1
// nvcc-check: -DFORMAT=0 -DROWS=8 -DZEROS=1
// nvcc-check: -DFORMAT=2 -DROWS=1 -DZEROS=0
// nvcc-check: -DFORMAT=2 -DROWS=8 -DZEROS=0

#ifndef FORMAT
#define FORMAT 0
#endif
#ifndef ROWS
#define ROWS 1
#endif
#ifndef ZEROS
#define ZEROS 0
#endif
#if FORMAT != 0 && FORMAT != 2
#error "FORMAT must be 0 (int4) or 2 (fp8 e4m3)"
#endif
#if FORMAT == 2 && ZEROS
#error "fp8 weights have no zero point"
#endif
#if ROWS < 1 || ROWS > 8
#error "ROWS must be 1..8: the batch rows are the mma's 8 columns"
#endif

namespace {
constexpr int LANE_COLS = FORMAT == 0 ? 32 : 16;  // columns of a lane's 16 bytes of codes
constexpr int STEP_COLS = 4 * LANE_COLS;          // columns of one step: a quad's four lanes
constexpr int MMAS = LANE_COLS / 4;               // mmas of a step, two pairs of a lane each
constexpr int X_LOADS = LANE_COLS / 8;            // 16-byte activation loads of a lane per step
constexpr int WK = 8;                             // warps of a block, over the same 16 rows
constexpr int UNROLL = 2;                         // steps a warp loads before it multiplies
#if FORMAT == 0
constexpr unsigned int BF16X2_ONES = 0x3f803f80u;
#else
constexpr unsigned int BF16X2_2P120 = 0x7b807b80u;
constexpr unsigned int BF16X2_NEG_ZERO = 0x80008000u;
#endif
static_assert(32 * WK == 256, "the launch bounds are the block");
}  // namespace

// The 32-bit word i (0..3) of a 16-byte load.
__device__ __forceinline__ unsigned int word_of(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

// Pair p of a lane's codes, columns 2p and 2p + 1, as bf16: int4 (128 + q, 128 + q'), fp8 the values.
__device__ __forceinline__ unsigned int code_pair(const uint4& codes, int p) {
#if FORMAT == 0
  return ((word_of(codes, p >> 2) >> (4 * (p & 3))) & 0x000f000fu) | 0x43004300u;
#else
  // Bytes lo and lo + 1 of the word into bits 8..15 of each half: s eeee mmm, then eeee mmm moved down 4.
  const unsigned int lo = 2 * (p & 1);
  const unsigned int high = __byte_perm(word_of(codes, p >> 1), 0u, 0x0404u | (lo << 4) | ((lo + 1) << 12));
  const unsigned int scaled = ((high >> 4) & 0x07f007f0u) | (high & 0x80008000u);
  unsigned int v;
  asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(v) : "r"(scaled), "r"(BF16X2_2P120), "r"(BF16X2_NEG_ZERO));
  return v;
#endif
}

// grid (ceil(n / 16), splits), block 32 · WK = 256. Split y covers steps [y · split_steps,
// min(k / STEP_COLS, (y + 1) · split_steps)) of every row. out [ROWS, n] bf16 (+ bias); with splits,
// through partial [splits, ROWS, n] f32 and arrival (a counter a block: CudaDevice.arrivalCounters).
extern "C" __global__ void __launch_bounds__(256) gemv_mma_kernel(bf16* __restrict__ out, float* __restrict__ partial, unsigned int* __restrict__ arrival,
                                                                 const bf16* __restrict__ x,
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
  const int row_chunks = k / LANE_COLS;
  const int s_begin = blockIdx.y * split_steps, s_end = min(k / STEP_COLS, s_begin + split_steps);
  const uint4* w[2] = {codes + (long long)rows[0] * row_chunks + t, codes + (long long)rows[1] * row_chunks + t};
  const bool has_x = g < ROWS;
  const uint4* xg = reinterpret_cast<const uint4*>(x + (long long)(has_x ? g : 0) * k) + X_LOADS * t;
  float acc[4] = {0.f, 0.f, 0.f, 0.f};

  for (int s0 = s_begin + warp * UNROLL; s0 < s_end; s0 += WK * UNROLL) {
    uint4 cw[UNROLL][2], xv[UNROLL][X_LOADS];
#pragma unroll
    for (int u = 0; u < UNROLL; u++) {
      const int s = s0 + u;
      const bool live = s < s_end;
#pragma unroll
      for (int r = 0; r < 2; r++) cw[u][r] = live ? load_streaming(w[r] + 4 * s) : make_uint4(0u, 0u, 0u, 0u);
#pragma unroll
      for (int j = 0; j < X_LOADS; j++) xv[u][j] = live && has_x ? xg[(STEP_COLS / 8) * s + j] : make_uint4(0u, 0u, 0u, 0u);
    }
#pragma unroll
    for (int u = 0; u < UNROLL; u++) {
      const int s = s0 + u;
      if (s >= s_end) break;
      float d[4] = {0.f, 0.f, 0.f, 0.f};
#if FORMAT == 0
      float sx[4] = {0.f, 0.f, 0.f, 0.f};
      const unsigned int ones[4] = {BF16X2_ONES, BF16X2_ONES, BF16X2_ONES, BF16X2_ONES};
#endif
#pragma unroll
      for (int j = 0; j < MMAS; j++) {
        const unsigned int a[4] = {code_pair(cw[u][0], 2 * j), code_pair(cw[u][1], 2 * j), code_pair(cw[u][0], 2 * j + 1), code_pair(cw[u][1], 2 * j + 1)};
        // Activation pairs 2j and 2j + 1 of the lane's columns: words 2j, 2j + 1 of its loads.
        const unsigned int b0 = word_of(xv[u][j >> 1], (2 * j) & 3), b1 = word_of(xv[u][j >> 1], (2 * j + 1) & 3);
        mma_bf16_16816(d, a, b0, b1);
#if FORMAT == 0
        mma_bf16_16816(sx, ones, b0, b1);
#endif
      }
      // d: rows g (d[0], d[1]) and g + 8 (d[2], d[3]) at batch rows 2t, 2t + 1 (sx[0], sx[1]: their Σ x).
      const int group = s * STEP_COLS / group_size;
#pragma unroll
      for (int r = 0; r < 2; r++) {
        const long long gi = (long long)rows[r] * groups + group;
        const float scale = scales[gi];
#if FORMAT == 0
        const float zero = 128.f + (ZEROS ? (float)zeros[gi] : 8.f);
#pragma unroll
        for (int c = 0; c < 2; c++) acc[2 * r + c] = fmaf(scale, fmaf(-zero, sx[c], d[2 * r + c]), acc[2 * r + c]);
#else
#pragma unroll
        for (int c = 0; c < 2; c++) acc[2 * r + c] = fmaf(scale, d[2 * r + c], acc[2 * r + c]);
#endif
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
  if (gridDim.y > 1) split_sum_if_last(out, partial, bias, ROWS, n, gridDim.y, 0, ROWS, row0, min(n, row0 + 16), arrival + blockIdx.x);
}
