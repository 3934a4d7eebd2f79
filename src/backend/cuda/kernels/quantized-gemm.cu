// Batches of 9 or more rows (prefill, batched decode) times a quantized linear weight in Keel's
// layouts (quantized-linear.cu names them: FORMAT 0 int4, 1 int8, 2 fp8 e4m3, 3 nf4, 4 fp4;
// scales f32 and zero codes u8 per (output row, group); MINS=1: int4 with a float32 min per (output
// row, group) subtracted after scaling, GGUF's Q4_K), on bf16 tensor cores (mma.sync
// m16n8k16, sm_80 and sm_90a), without a dequantized copy of the weight in memory:
// - a block gives a BM x BN tile of the output; k advances BK = 64 columns a stage, STAGES stages
//   in flight by cp.async: the activations as bf16, the weight as its packed codes (a quarter or
//   half of bf16's bytes);
// - each 16-byte chunk of codes (32 int4 or 16 8-bit codes, in one scale group) is decoded by the
//   thread that loaded it when its stage comes up, into a bf16 B tile in shared memory: code
//   minus zero exactly (int4: OR-ed into the mantissa of the bf16 128, as in the GEMV), times the
//   scale in f32 (nf4, fp4: the code's table value times the scale), rounded to bf16 once, the
//   value a dequantized bf16 weight would hold; the chunk's scale and zero are loaded with its
//   codes and stored to shared memory once the previous stage's products are issued;
// - the decoded tile feeds the same ldmatrix/mma fragments as moe-gemm.cu.
// With too few tiles to fill the GPU k is split over gridDim.z, and the last split of a tile adds
// the splits' f32 partial sums (split-k.cuh).
#include "common.cuh"
#include "mma.cuh"
#include "split-k.cuh"

// nvcc-check: -DFORMAT=0 -DBM=16
// nvcc-check: -DFORMAT=0 -DBM=128
// nvcc-check: -DFORMAT=0 -DBM=16 -DMINS=1
// nvcc-check: -DFORMAT=0 -DBM=128 -DMINS=1
// nvcc-check: -DFORMAT=1 -DBM=32
// nvcc-check: -DFORMAT=1 -DBM=128
// nvcc-check: -DFORMAT=2 -DBM=64
// nvcc-check: -DFORMAT=3 -DBM=16
// nvcc-check: -DFORMAT=4 -DBM=128

#ifndef FORMAT
#define FORMAT 0
#endif
#include "code-table.cuh"
#ifndef MINS
#define MINS 0
#endif
#if MINS && FORMAT != 0
#error "mins are an int4 feature"
#endif
#ifndef BM
#error "compile with -DBM=<rows per tile: 16, 32, 64 or 128>"
#endif

namespace {
constexpr int BN = 64;  // output columns (weight rows) per block
constexpr int BK = 64;  // k columns per stage
constexpr int STAGES = 3;
constexpr int NT = 128;
constexpr int ROW = BK + 8;  // smem row in bf16: 144 bytes puts the 8 rows an ldmatrix reads in distinct banks
constexpr int WARPS_M = BM >= 32 ? 2 : 1;
constexpr int WARPS_N = 4 / WARPS_M;
constexpr int WM = BM / WARPS_M, WN = BN / WARPS_N;
constexpr int MT = WM / 16, NT8 = WN / 8;
constexpr int CHUNK_COLS = FOUR_BIT ? 32 : 16;     // codes in 16 bytes
constexpr int A_CPR = BK / 8;                      // 16-byte chunks of a bf16 A row
constexpr int B_CPR = BK / CHUNK_COLS;             // 16-byte chunks of codes of a B row
constexpr int A_CHUNKS = BM * A_CPR, B_CHUNKS = BN * B_CPR;
constexpr int A_PER_THREAD = (A_CHUNKS + NT - 1) / NT, B_PER_THREAD = B_CHUNKS / NT;
// A stage: the A tile (bf16), the codes (16 bytes a chunk), and each chunk's scale, zero (and min) as floats.
constexpr int PARAMS = MINS ? 3 : 2;
constexpr int A_BYTES = BM * ROW * 2, CODE_BYTES = B_CHUNKS * 16, PARAM_BYTES = B_CHUNKS * PARAMS * 4;
constexpr int STAGE_BYTES = A_BYTES + CODE_BYTES + PARAM_BYTES;
static_assert(BM % 16 == 0 && BM <= 128, "BM is 16, 32, 64 or 128");
static_assert(B_CHUNKS % NT == 0 && NT8 % 2 == 0, "tile shape");
}  // namespace

// e4m3 code -> its value / 2^8, exactly (quantized-linear.cu's).
__device__ __forceinline__ float fp8_value_2m8(unsigned int b) {
  return f16_to_f32((unsigned short)(((b & 0x7fu) << 7) | ((b & 0x80u) << 8)));
}

// One chunk of codes decoded to bf16 at dst (CHUNK_COLS values, column order): (code - zero) *
// scale (- min), fp8 value * scale, or table value * scale; `zero` as the float subtracted from the
// decoded code (int4: 128 + zero, against 128 + q; int8: zero; fp8, nf4, fp4: unused).
__device__ __forceinline__ void decode_chunk_bf16(uint4 v, float scale, float zero, float min, const float* table, uint4* dst) {
  const unsigned int words[4] = {v.x, v.y, v.z, v.w};
#if TABLE_CODES
#pragma unroll
  for (int i = 0; i < 4; i++) {
    unsigned int pairs[4];
#pragma unroll
    for (int s = 0; s < 4; s++) {
      const unsigned int t = (words[i] >> (4 * s)) & 0x000f000fu;
      pairs[s] = pack_bf16x2(table[t & 0xffffu] * scale, table[t >> 16] * scale);
    }
    dst[i] = make_uint4(pairs[0], pairs[1], pairs[2], pairs[3]);
  }
#elif FORMAT == 0
#pragma unroll
  for (int i = 0; i < 4; i++) {
    unsigned int pairs[4];
#pragma unroll
    for (int s = 0; s < 4; s++) {
      const unsigned int t = ((words[i] >> (4 * s)) & 0x000f000fu) | 0x43004300u;
      pairs[s] = pack_bf16x2((__uint_as_float(t << 16) - zero) * scale - min, (__uint_as_float(t & 0xffff0000u) - zero) * scale - min);
    }
    dst[i] = make_uint4(pairs[0], pairs[1], pairs[2], pairs[3]);
  }
#else
  unsigned int pairs[8];
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const unsigned int b0 = (words[i] >> (16 * h)) & 0xffu, b1 = (words[i] >> (16 * h + 8)) & 0xffu;
#if FORMAT == 1
      pairs[2 * i + h] = pack_bf16x2(((float)b0 - zero) * scale, ((float)b1 - zero) * scale);
#else
      pairs[2 * i + h] = pack_bf16x2(fp8_value_2m8(b0) * scale, fp8_value_2m8(b1) * scale);
#endif
    }
  dst[0] = make_uint4(pairs[0], pairs[1], pairs[2], pairs[3]);
  dst[1] = make_uint4(pairs[4], pairs[5], pairs[6], pairs[7]);
#endif
}

// grid (ceil(n / BN), ceil(m / BM), splits), block NT, dynamic shared memory STAGES * STAGE_BYTES
// + BN * ROW * 2. x [m, k] bf16 (in the weight's stored column order); codes [n, row_bytes];
// scales f32 and zeros u8 (or null: symmetric) [n, groups]; mins f32 [n, groups] (read when MINS); k and group_size multiples of
// CHUNK_COLS (group_size = k: one group a row). Split z covers k tiles [z · split_tiles, ...).
// out [m, n] bf16 (+ bias); with splits, through partial [splits, m, n] f32 and arrival (a counter
// a tile: CudaDevice.arrivalCounters).
extern "C" __global__ void __launch_bounds__(NT) quantized_gemm_kernel(bf16* __restrict__ out, float* __restrict__ partial, unsigned int* __restrict__ arrival,
                                                                       const bf16* __restrict__ x,
                                                                       const unsigned char* __restrict__ codes, const float* __restrict__ scales,
                                                                       const unsigned char* __restrict__ zeros, const float* __restrict__ mins,
                                                                       const bf16* __restrict__ bias, int m,
                                                                       int n, int k, int row_bytes, int groups, int group_size, int split_tiles) {
  PDL_PROLOGUE();
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ float table_shared[16];
  const float* table = load_table(table_shared);
  bf16* decoded = reinterpret_cast<bf16*>(smem + STAGES * STAGE_BYTES);
  const int n0 = blockIdx.x * BN, m0 = blockIdx.y * BM;
  const int tid = threadIdx.x, warp = tid >> 5;
  const int wm = warp / WARPS_N, wn = warp % WARPS_N;
  const int k_tiles = (k + BK - 1) / BK;
  const int t_begin = blockIdx.z * split_tiles, t_end = min(k_tiles, t_begin + split_tiles);

  // Each thread's A rows and B chunks, fixed over k (null: past m or n, zero-filled).
  const bf16* a_src[A_PER_THREAD];
#pragma unroll
  for (int i = 0; i < A_PER_THREAD; i++) {
    const int r = (tid + i * NT) / A_CPR;
    a_src[i] = tid + i * NT < A_CHUNKS && m0 + r < m ? x + (long long)(m0 + r) * k : nullptr;
  }
  int b_row[B_PER_THREAD];
#pragma unroll
  for (int i = 0; i < B_PER_THREAD; i++) b_row[i] = n0 + (tid + i * NT) / B_CPR;

  auto a_tile = [&](int stage) { return reinterpret_cast<bf16*>(smem + stage * STAGE_BYTES); };
  auto code_tile = [&](int stage) { return smem + stage * STAGE_BYTES + A_BYTES; };
  auto param_tile = [&](int stage) { return reinterpret_cast<float*>(smem + stage * STAGE_BYTES + A_BYTES + CODE_BYTES); };
  // The scale, zero and min of this thread's chunk i in k tile kt; scale and min 0 past n or k (the chunk decodes to zeros).
  auto chunk_params = [&](int i, int kt, float& scale, float& zero, float& min) {
    const int kc = kt * BK + ((tid + i * NT) % B_CPR) * CHUNK_COLS;
    scale = 0.f;
    zero = 0.f;
    min = 0.f;
    if (b_row[i] < n && kc < k) {
      const long long g = (long long)b_row[i] * groups + kc / group_size;
      scale = FORMAT == 2 ? scales[g] * 256.f : scales[g];
      const float z = zeros != nullptr ? (float)zeros[g] : (FORMAT == 0 ? 8.f : 128.f);
      zero = FORMAT == 0 ? 128.f + z : z;
      if (MINS) min = mins[g];
    }
  };
  auto load_stage = [&](int stage, int kt) {
    bf16* sa = a_tile(stage);
    unsigned char* sc = code_tile(stage);
    const int k0 = kt * BK;
    stage_bf16_rows<BM, A_CPR, NT>(sa, a_src, k0, k, ROW, x);
#pragma unroll
    for (int i = 0; i < B_PER_THREAD; i++) {
      const int c = tid + i * NT;
      const int kc = k0 + (c % B_CPR) * CHUNK_COLS;
      const bool valid = b_row[i] < n && kc < k;
      const long long at = (long long)b_row[i] * row_bytes + (long long)(kc / CHUNK_COLS) * 16;
      cp_async16(sc + c * 16, valid ? codes + at : codes, valid ? 16 : 0);
    }
  };
  auto store_params = [&](int stage, const float* scale, const float* zero, const float* min) {
    float* p = param_tile(stage);
#pragma unroll
    for (int i = 0; i < B_PER_THREAD; i++) {
      p[PARAMS * (tid + i * NT)] = scale[i];
      p[PARAMS * (tid + i * NT) + 1] = zero[i];
      if (MINS) p[PARAMS * (tid + i * NT) + 2] = min[i];
    }
  };

  float acc[MT][NT8][4];
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int nt = 0; nt < NT8; nt++) acc[mt][nt][0] = acc[mt][nt][1] = acc[mt][nt][2] = acc[mt][nt][3] = 0.f;

#pragma unroll
  for (int s = 0; s < STAGES - 1; s++) {
    if (t_begin + s < t_end) {
      load_stage(s, t_begin + s);
      float scale[B_PER_THREAD], zero[B_PER_THREAD], min[B_PER_THREAD];
#pragma unroll
      for (int i = 0; i < B_PER_THREAD; i++) chunk_params(i, t_begin + s, scale[i], zero[i], min[i]);
      store_params(s, scale, zero, min);
    }
    cp_async_commit();
  }
  for (int kt = t_begin; kt < t_end; kt++) {
    const int stage = (kt - t_begin) % STAGES;
    cp_async_wait<STAGES - 2>();
    __syncthreads();
    // The stage refilled here was read in the previous iteration, which every thread has left.
    const int next = kt + STAGES - 1;
    const int next_stage = (next - t_begin) % STAGES;
    if (next < t_end) load_stage(next_stage, next);
    cp_async_commit();
    float next_scale[B_PER_THREAD], next_zero[B_PER_THREAD], next_min[B_PER_THREAD];
#pragma unroll
    for (int i = 0; i < B_PER_THREAD; i++) {
      if (next < t_end) chunk_params(i, next, next_scale[i], next_zero[i], next_min[i]);
    }
    // Each thread decodes the chunks it loaded into the bf16 B tile.
    const unsigned char* sc = code_tile(stage);
    const float* sp = param_tile(stage);
#pragma unroll
    for (int i = 0; i < B_PER_THREAD; i++) {
      const int c = tid + i * NT;
      const uint4 v = *reinterpret_cast<const uint4*>(sc + c * 16);
      decode_chunk_bf16(v, sp[PARAMS * c], sp[PARAMS * c + 1], MINS ? sp[PARAMS * c + 2] : 0.f, table, reinterpret_cast<uint4*>(decoded + (c / B_CPR) * ROW + (c % B_CPR) * CHUNK_COLS));
    }
    __syncthreads();
    const bf16* sa = a_tile(stage);
#pragma unroll
    for (int kk = 0; kk < BK / 16; kk++) {
      unsigned int af[MT][4];
      load_a_fragments<MT>(af, sa + wm * WM * ROW, ROW, kk);
      mma_k_step<MT, NT8>(acc, af, decoded + wn * WN * ROW, ROW, kk);
    }
    // Stored now that this stage's products are issued; read after two more barriers.
    if (next < t_end) store_params(next_stage, next_scale, next_zero, next_min);
  }
  cp_async_wait<0>();

  for_each_accumulator_pair<MT, NT8>([&](int mt, int nt, int half, int tr, int tc) {
    const int r = m0 + wm * WM + tr;
    if (r >= m) return;
#pragma unroll
    for (int e = 0; e < 2; e++) {
      const int col = n0 + wn * WN + tc + e;
      if (col >= n) continue;
      const float v = acc[mt][nt][2 * half + e];
      if (gridDim.z > 1) partial[((long long)blockIdx.z * m + r) * n + col] = v;
      else out[(long long)r * n + col] = f32_to_bf16(v + (bias == nullptr ? 0.f : bf16_to_f32(bias[col])));
    }
  });
  if (gridDim.z > 1) split_sum_if_last(out, partial, bias, m, n, gridDim.z, m0, min(m, m0 + BM), n0, min(n, n0 + BN), arrival + blockIdx.y * gridDim.x + blockIdx.x);
}
