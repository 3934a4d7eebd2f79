// Expert MLPs of prefill and large batches: one grouped GEMM launch over every (expert, token tile,
// output tile) on bf16 tensor cores (mma.sync m16n8k16, as prefill-attention.cu). Tiles of BM
// pairs come from moe_route_kernel's table; blocks past the last tile exit at once, so the grid
// depends only on the step's shape. A and B stream through shared memory in STAGES cp.async
// stages of BK columns.
//
// GATED=1, the up projection fused with the activation: A rows are the tile's tokens gathered from
// x [tokens, k]; B is the expert's gate rows [n0, n0 + BN) and its up rows [n + n0, ...) of w
// [count, 2n, k]; out = h [pairs, n] in expert-sorted order, act(gate + bias, up + bias), each
// product rounded to bf16 before the activation. GATED=0, the down projection: A rows are the
// tile's rows of h [pairs, k = n]; B rows of w [count, hidden, n]; out = y [pairs, hidden] + bias.
//
// MXFP4=1: w holds MXFP4 blocks (mxfp4.cuh) and w_scales their scale codes. A stage's k columns
// (BK = 32) are then one block per B row: its 16 bytes come by cp.async and its scale code by a
// plain load issued with them and stored to shared memory once this stage's products are done;
// when the stage is consumed, each thread decodes B rows into one bf16 tile (exact), which the
// same fragments as the bf16 path read.
//
// QUANT (1 int4, 2 int8, 3 fp8 e4m3): w holds the experts' codes in Keel's quantized layout
// (src/tensor/quantized-weight.ts, stacked expert after expert along the rows), w_scales f32 and,
// with ZEROS=1, w_zeros u8 per (row, group of group_stages · BK columns). As with MXFP4, a stage is
// one 16-byte (int4) or 32-byte (8-bit) run of each B row's codes by cp.async, with the row's
// scale and zero for the stage's group loaded beside it; consuming the stage, each thread decodes
// its B row into the bf16 tile, (code - zero) · scale rounded to bf16 once, as the dequantized
// weight holds it.
#include "common.cuh"
#include "gated-activation.cuh"
#include "mma.cuh"
#include "moe.cuh"
#include "mxfp4.cuh"

// nvcc-check: -DBM=16 -DGATED=1 -DACT=0
// nvcc-check: -DBM=32 -DGATED=1 -DACT=1
// nvcc-check: -DBM=64 -DGATED=1 -DACT=2
// nvcc-check: -DBM=128 -DGATED=1 -DACT=0
// nvcc-check: -DBM=16 -DGATED=0
// nvcc-check: -DBM=64 -DGATED=0
// nvcc-check: -DBM=128 -DGATED=0
// nvcc-check: -DBM=16 -DGATED=1 -DACT=2 -DMXFP4=1
// nvcc-check: -DBM=64 -DGATED=1 -DACT=2 -DMXFP4=1
// nvcc-check: -DBM=32 -DGATED=0 -DMXFP4=1
// nvcc-check: -DBM=128 -DGATED=0 -DMXFP4=1
// nvcc-check: -DBM=16 -DGATED=1 -DACT=0 -DQUANT=1 -DZEROS=1
// nvcc-check: -DBM=128 -DGATED=1 -DACT=0 -DQUANT=2 -DZEROS=0
// nvcc-check: -DBM=64 -DGATED=1 -DACT=1 -DQUANT=3
// nvcc-check: -DBM=32 -DGATED=0 -DQUANT=1 -DZEROS=0
// nvcc-check: -DBM=128 -DGATED=0 -DQUANT=2 -DZEROS=1
// nvcc-check: -DBM=16 -DGATED=0 -DQUANT=3

#ifndef BM
#error "compile with -DBM=<rows per tile: 16, 32, 64 or 128>"
#endif
#ifndef GATED
#define GATED 0
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
// B is staged packed and decoded into a bf16 tile per stage.
#define PACKED_B (MXFP4 || QUANT)

namespace {
constexpr int BN = 64;  // output columns per block (of each matrix)
constexpr int BK = 32;  // k columns per stage
constexpr int STAGES = 3;
constexpr int NT = 128;
constexpr int MATS = GATED ? 2 : 1;
constexpr int ROW = BK + 8;  // smem row in bf16: 80 bytes puts the 8 rows an ldmatrix reads in distinct banks
constexpr int WARPS_M = BM >= 32 ? 2 : 1;
constexpr int WARPS_N = 4 / WARPS_M;
constexpr int WM = BM / WARPS_M, WN = BN / WARPS_N;
constexpr int MT = WM / 16, NT8 = WN / 8;
constexpr int CHUNKS_PER_ROW = BK / 8;
constexpr int A_CHUNKS = BM * CHUNKS_PER_ROW, B_CHUNKS = MATS * BN * CHUNKS_PER_ROW;
constexpr int A_PER_THREAD = (A_CHUNKS + NT - 1) / NT;
constexpr int B_ROWS = MATS * BN;
#if MXFP4
// A stage: the A tile, then B_ROWS blocks of 16 bytes, then B_ROWS scale codes (a multiple of 16
// bytes); after the stages, one decoded bf16 B tile of B_ROWS * ROW.
constexpr int STAGE_ELEMS = BM * ROW + B_ROWS * 8 + B_ROWS / 2;
static_assert(BK == 32, "an MXFP4 stage is one block of each B row");
static_assert(B_ROWS % 32 == 0 && B_ROWS <= NT, "one B row a thread");
#elif QUANT
// Bytes of one B row's codes in a stage: BK int4 or 8-bit codes.
constexpr int Q_BYTES = QUANT == 1 ? BK / 2 : BK;
// A stage: the A tile, then B_ROWS runs of Q_BYTES, then B_ROWS f32 scales and B_ROWS f32 zeros;
// after the stages, one decoded bf16 B tile of B_ROWS * ROW.
constexpr int STAGE_ELEMS = BM * ROW + B_ROWS * Q_BYTES / 2 + B_ROWS * 4;
static_assert(BK == 32, "a stage is one 16- or 32-byte run of each B row");
static_assert(B_ROWS % 32 == 0 && B_ROWS <= NT, "one B row a thread");
#else
constexpr int STAGE_ELEMS = (BM + B_ROWS) * ROW;
constexpr int B_PER_THREAD = B_CHUNKS / NT;
#endif
static_assert(BM % 16 == 0 && BM <= 128, "BM is 16, 32, 64 or 128");
static_assert(B_CHUNKS % NT == 0 && NT8 % 2 == 0, "tile shape");
}  // namespace

#if QUANT
// One B row's BK codes of a stage (Q_BYTES at `codes`, in shared memory) as bf16 values
// (code - zero) · scale, in column order: int4 words hold columns 0,2,4,6 in nibbles 0..3 and
// 1,3,5,7 in 4..7; fp8's value / 2^8 times 2^8 · scale (exact before the one rounding).
__device__ __forceinline__ void decode_codes(const unsigned char* codes, float scale, float zero, uint4* out) {
  float f[BK];
#if QUANT == 1
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const unsigned int word = reinterpret_cast<const unsigned int*>(codes)[i];
#pragma unroll
    for (int s = 0; s < 4; s++) {
      f[8 * i + 2 * s] = ((float)((word >> (4 * s)) & 0xfu) - zero) * scale;
      f[8 * i + 2 * s + 1] = ((float)((word >> (4 * s + 16)) & 0xfu) - zero) * scale;
    }
  }
#else
#pragma unroll
  for (int i = 0; i < BK / 4; i++) {
    const unsigned int word = reinterpret_cast<const unsigned int*>(codes)[i];
#pragma unroll
    for (int b = 0; b < 4; b++) {
      const unsigned int q = (word >> (8 * b)) & 0xffu;
#if QUANT == 2
      f[4 * i + b] = ((float)q - zero) * scale;
#else
      f[4 * i + b] = e4m3_over_256(q) * (256.f * scale);
#endif
    }
  }
#endif
#pragma unroll
  for (int c = 0; c < BK / 8; c++) out[c] = pack8(f + 8 * c);
}
#endif

// grid (ceil(n_out / BN), local tile capacity), block NT, dynamic shared memory STAGES *
// STAGE_ELEMS * 2 bytes (MXFP4: plus the decoded tile's B_ROWS * ROW * 2). n_out and k_in are multiples of 8 (MXFP4: k_in of 32);
// bias: [count, MATS * n_out] or null. MXFP4: w the blocks [count, MATS * n_out, k_in / 2] bytes,
// w_scales [count, MATS * n_out, k_in / 32]. QUANT (k_in a multiple of 32): w the codes
// [count · MATS · n_out, k_in] (int4: k_in / 2 bytes a row), w_scales f32 and w_zeros u8 (ZEROS=1)
// [count · MATS · n_out, groups], group_stages stages a group. Else w_scales and w_zeros are null.
extern "C" __global__ void __launch_bounds__(NT) moe_gemm_kernel(
    bf16* __restrict__ out, const bf16* __restrict__ a, const bf16* __restrict__ w, const void* __restrict__ w_scales,
    const unsigned char* __restrict__ w_zeros, const bf16* __restrict__ bias, const int* __restrict__ sorted_pairs,
    const int* __restrict__ offsets, const int* __restrict__ tile_start, const int* __restrict__ tiles, int first, int count, int top_k,
    int n_out, int k_in, int group_stages, int groups, float alpha, float limit) {
  PDL_PROLOGUE();
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* smem = reinterpret_cast<bf16*>(smem_raw);
  int expert, start, rows;
  if (!local_tile(tile_start, tiles, offsets, first, count, BM, expert, start, rows)) return;
  const int n0 = blockIdx.x * BN;
  const int tid = threadIdx.x, warp = tid >> 5;
  const int wm = warp / WARPS_N, wn = warp % WARPS_N;

  // Each thread's source rows, fixed over the k loop (null: a row past the tile or the output, zero-filled).
  const bf16* a_src[A_PER_THREAD];
#pragma unroll
  for (int i = 0; i < A_PER_THREAD; i++) {
    const int r = (tid + i * NT) / CHUNKS_PER_ROW;
    const bool valid = tid + i * NT < A_CHUNKS && r < rows;
#if GATED
    a_src[i] = valid ? a + (long long)(sorted_pairs[start + r] / top_k) * k_in : nullptr;
#else
    a_src[i] = valid ? a + (long long)(start + r) * k_in : nullptr;
#endif
  }
#if MXFP4
  // Thread tid < B_ROWS loads B row tid's blocks (gate rows, then up rows); null past the output.
  const int blocks_per_row = k_in / 32;
  const unsigned char* b_blocks = nullptr;
  const unsigned char* b_scales = nullptr;
  if (tid < B_ROWS) {
    const int m = tid / BN, col = n0 + tid % BN;
    const long long row = (long long)expert * MATS * n_out + (long long)m * n_out + col;
    if (col < n_out) {
      b_blocks = reinterpret_cast<const unsigned char*>(w) + row * blocks_per_row * 16;
      b_scales = reinterpret_cast<const unsigned char*>(w_scales) + row * blocks_per_row;
    }
  }
  bf16* decoded = smem + STAGES * STAGE_ELEMS;
  auto stage_scales = [&](int stage) { return reinterpret_cast<unsigned char*>(smem + stage * STAGE_ELEMS + BM * ROW + B_ROWS * 8); };
  // The scale code of this thread's row for k tile kt (127, 2^0, for rows past the output: their blocks are zero).
  auto scale_code = [&](int kt) -> unsigned char { return b_scales != nullptr ? b_scales[kt] : (unsigned char)127; };
#elif QUANT
  // Thread tid < B_ROWS loads B row tid's codes (gate rows, then up rows); null past the output.
  const unsigned char* b_codes = nullptr;
  long long b_group = 0;
  if (tid < B_ROWS) {
    const int m = tid / BN, col = n0 + tid % BN;
    const long long row = (long long)expert * MATS * n_out + (long long)m * n_out + col;
    if (col < n_out) {
      b_codes = reinterpret_cast<const unsigned char*>(w) + row * (k_in / BK) * Q_BYTES;
      b_group = row * groups;
    }
  }
  bf16* decoded = smem + STAGES * STAGE_ELEMS;
  auto stage_scales = [&](int stage) { return reinterpret_cast<float*>(smem + stage * STAGE_ELEMS + BM * ROW + B_ROWS * Q_BYTES / 2); };
  // The scale and zero of this thread's row for k tile kt (0 and 0 for rows past the output: their codes are zero-filled).
  auto group_scale = [&](int kt) -> float { return b_codes != nullptr ? reinterpret_cast<const float*>(w_scales)[b_group + kt / group_stages] : 0.f; };
  auto group_zero = [&](int kt) -> float {
#if ZEROS
    return b_codes != nullptr ? (float)w_zeros[b_group + kt / group_stages] : 0.f;
#else
    return QUANT == 1 ? 8.f : QUANT == 2 ? 128.f : 0.f;
#endif
  };
#else
  const bf16* b_src[B_PER_THREAD];
#pragma unroll
  for (int i = 0; i < B_PER_THREAD; i++) {
    const int r = (tid + i * NT) / CHUNKS_PER_ROW;  // 0 .. MATS * BN - 1: gate rows, then up rows
    const int m = r / BN, col = n0 + r % BN;
    b_src[i] = col < n_out ? w + ((long long)expert * MATS * n_out + (long long)m * n_out + col) * k_in : nullptr;
  }
#endif
  auto load_stage = [&](int stage, int k0) {
    bf16* sa = smem + stage * STAGE_ELEMS;
    bf16* sb = sa + BM * ROW;
    stage_bf16_rows<BM, CHUNKS_PER_ROW, NT>(sa, a_src, k0, k_in, ROW, a);
#if MXFP4
    if (tid < B_ROWS) cp_async16(sb + tid * 8, b_blocks != nullptr ? b_blocks + (k0 / 32) * 16 : reinterpret_cast<const unsigned char*>(w), b_blocks != nullptr ? 16 : 0);
#elif QUANT
    if (tid < B_ROWS) {
#pragma unroll
      for (int h = 0; h < Q_BYTES / 16; h++) {
        const unsigned char* src = b_codes != nullptr ? b_codes + (k0 / BK) * Q_BYTES + 16 * h : reinterpret_cast<const unsigned char*>(w);
        cp_async16(reinterpret_cast<unsigned char*>(sb) + tid * Q_BYTES + 16 * h, src, b_codes != nullptr ? 16 : 0);
      }
    }
#else
#pragma unroll
    for (int i = 0; i < B_PER_THREAD; i++) {
      const int c = tid + i * NT;
      const int r = c / CHUNKS_PER_ROW, k = k0 + (c % CHUNKS_PER_ROW) * 8;
      const bool valid = b_src[i] != nullptr && k < k_in;
      cp_async16(sb + r * ROW + (c % CHUNKS_PER_ROW) * 8, valid ? b_src[i] + k : w, valid ? 16 : 0);
    }
#endif
  };

  float acc[MATS][MT][NT8][4];
#pragma unroll
  for (int m = 0; m < MATS; m++)
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int nt = 0; nt < NT8; nt++) acc[m][mt][nt][0] = acc[m][mt][nt][1] = acc[m][mt][nt][2] = acc[m][mt][nt][3] = 0.f;

  const int k_tiles = (k_in + BK - 1) / BK;
#pragma unroll
  for (int s = 0; s < STAGES - 1; s++) {
    if (s < k_tiles) {
      load_stage(s, s * BK);
#if MXFP4
      if (tid < B_ROWS) stage_scales(s)[tid] = scale_code(s);
#elif QUANT
      if (tid < B_ROWS) {
        stage_scales(s)[tid] = group_scale(s);
        stage_scales(s)[B_ROWS + tid] = group_zero(s);
      }
#endif
    }
    cp_async_commit();
  }
  for (int kt = 0; kt < k_tiles; kt++) {
    cp_async_wait<STAGES - 2>();
    __syncthreads();
    // The stage refilled here was read in the previous iteration, which every thread has left.
    const int next = kt + STAGES - 1;
    if (next < k_tiles) load_stage(next % STAGES, next * BK);
    cp_async_commit();
    const bf16* sa = smem + (kt % STAGES) * STAGE_ELEMS;
#if MXFP4
    // Issued now, stored after this stage's products (the load's latency hidden behind them).
    const unsigned char next_scale = tid < B_ROWS && next < k_tiles ? scale_code(next) : (unsigned char)0;
    if (tid < B_ROWS) {
      const uint4 packed = *reinterpret_cast<const uint4*>(sa + BM * ROW + tid * 8);
      mxfp4_block_to_bf16(packed, stage_scales(kt % STAGES)[tid], reinterpret_cast<uint4*>(decoded + tid * ROW));
    }
    __syncthreads();
    const bf16* sb = decoded;
#elif QUANT
    // Issued now, stored after this stage's products (the loads' latency hidden behind them).
    const bool refill = tid < B_ROWS && next < k_tiles;
    const float next_scale = refill ? group_scale(next) : 0.f, next_zero = refill ? group_zero(next) : 0.f;
    if (tid < B_ROWS) {
      const float* st = stage_scales(kt % STAGES);
      decode_codes(reinterpret_cast<const unsigned char*>(sa + BM * ROW) + tid * Q_BYTES, st[tid], st[B_ROWS + tid], reinterpret_cast<uint4*>(decoded + tid * ROW));
    }
    __syncthreads();
    const bf16* sb = decoded;
#else
    const bf16* sb = sa + BM * ROW;
#endif
#pragma unroll
    for (int kk = 0; kk < BK / 16; kk++) {
      unsigned int af[MT][4];
      load_a_fragments<MT>(af, sa + wm * WM * ROW, ROW, kk);
#pragma unroll
      for (int m = 0; m < MATS; m++) mma_k_step<MT, NT8>(acc[m], af, sb + (m * BN + wn * WN) * ROW, ROW, kk);
    }
#if MXFP4
    if (tid < B_ROWS && next < k_tiles) stage_scales(next % STAGES)[tid] = next_scale;
#elif QUANT
    if (refill) {
      stage_scales(next % STAGES)[tid] = next_scale;
      stage_scales(next % STAGES)[B_ROWS + tid] = next_zero;
    }
#endif
  }
  cp_async_wait<0>();

  const bf16* b_row = bias == nullptr ? nullptr : bias + (long long)expert * MATS * n_out;
  for_each_accumulator_pair<MT, NT8>([&](int mt, int nt, int half, int tr, int tc) {
    const int r = wm * WM + tr;
    const int col = n0 + wn * WN + tc;
    if (r >= rows || col >= n_out) return;
    float v[2];
#pragma unroll
    for (int e = 0; e < 2; e++) {
      const float b0 = b_row == nullptr ? 0.f : bf16_to_f32(b_row[col + e]);
#if GATED
      const float b1 = b_row == nullptr ? 0.f : bf16_to_f32(b_row[n_out + col + e]);
      const float gate = bf16_to_f32(f32_to_bf16(acc[0][mt][nt][2 * half + e] + b0));
      const float up = bf16_to_f32(f32_to_bf16(acc[1][mt][nt][2 * half + e] + b1));
      v[e] = gated_activation(gate, up, alpha, limit);
#else
      v[e] = acc[0][mt][nt][2 * half + e] + b0;
#endif
    }
    *reinterpret_cast<unsigned int*>(out + (long long)(start + r) * n_out + col) = pack_bf16x2(v[0], v[1]);
  });
}
