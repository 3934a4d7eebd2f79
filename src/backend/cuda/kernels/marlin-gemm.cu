// Mixed-input GEMM for quantized linear weights at every batch size from 1 row (Marlin's idea:
// stream the codes at the memory roofline while the tensor cores multiply): out [m, n] bf16 =
// x [m, k] bf16 · Wᵀ (+ bias), W [n, k] in the fragment layout marlin-layout.cu writes at load.
// FORMAT 0 int4, 1 int8, 2 fp8 e4m3 (quantized-linear.cu's codes); ZEROS 1: u8 zero codes.
//
// - The layout (marlin-layout.cu) cuts W into strips of 16 output rows; a lane's 32-bit word
//   holds exactly the codes of its two B fragments (two n8 tiles) of one mma.sync m16n8k16 k step,
//   so a lane loads 16 bytes (4 int4 k steps or 2 8-bit ones) and no thread shares its weight
//   bytes with another: the shared memory only lands the cp.async copies, STAGES deep, while the
//   warp decodes and multiplies an earlier stage.
// - int4 codes become bf16 pairs with a shift and one lop3: (word >> 4p) & 0x000f000f | 0x43004300
//   is the pair (128 + q0, 128 + q1); one bf16x2 fma subtracts 128 + zero exactly (integers up to
//   256 are exact in bf16) and one multiplies by the scale (rounded to bf16). int8 codes become
//   floats 2^23 + q by a byte permute, less 2^23 + zero, times the f32 scale, packed to bf16 once.
//   An fp8 code's 7 exponent/mantissa bits moved under bf16's exponent field give its value /
//   2^120 exactly (normal and subnormal alike), times 2^120, times the scale.
// - Activations are staged per stage in shared memory (one A tile serves every warp of the same
//   k), read with ldmatrix; the stage's group scales (and zeros) come along by cp.async, laid out
//   [strip][group][16] so a warp's are 64 (16) contiguous bytes.
// - A block has 8 warps: WN along n (NS strips each) and WK along k, each WK warp taking its own
//   64 columns of a stage; the WK partial sums are added through shared memory at the end. With
//   too few blocks to fill the GPU the stages are also split over gridDim.z, and the last split of
//   a tile adds the splits' f32 partial sums (split-k.cuh).
#include "common.cuh"
#include "split-k.cuh"
#include "mma.cuh"

// nvcc-check: -DFORMAT=0 -DZEROS=0 -DMT=1 -DWK=8 -DNS=2
// nvcc-check: -DFORMAT=0 -DZEROS=1 -DMT=2 -DWK=4 -DNS=2
// nvcc-check: -DFORMAT=0 -DZEROS=0 -DMT=4 -DWK=2 -DNS=2
// nvcc-check: -DFORMAT=0 -DZEROS=1 -DMT=4 -DWK=1 -DNS=2
// nvcc-check: -DFORMAT=1 -DZEROS=1 -DMT=1 -DWK=2 -DNS=2
// nvcc-check: -DFORMAT=1 -DZEROS=0 -DMT=4 -DWK=2 -DNS=2
// nvcc-check: -DFORMAT=2 -DZEROS=0 -DMT=1 -DWK=8 -DNS=2
// nvcc-check: -DFORMAT=2 -DZEROS=0 -DMT=2 -DWK=1 -DNS=2

#ifndef FORMAT
#define FORMAT 0
#endif
#ifndef ZEROS
#define ZEROS 0
#endif
#ifndef MT
#define MT 1
#endif
#ifndef WK
#define WK 1
#endif
#ifndef NS
#define NS 2
#endif

namespace {
constexpr int NT = 256;
constexpr int WARPS = NT / 32;
constexpr int WN = WARPS / WK;
constexpr int STAGES = 4;
constexpr int BM = 16 * MT;
constexpr int WARP_K = 64;             // k columns of one warp's share of a stage
constexpr int SK = WARP_K * WK;        // k columns of a stage
constexpr int ROW = SK + 8;            // A row in shared memory (bf16): 8 ldmatrix rows in distinct banks
constexpr int UNITS = FORMAT == 0 ? 1 : 2;  // 16-byte units of a lane per strip per stage
constexpr int A_CPR = SK / 8;          // 16-byte chunks of an A row
constexpr int A_CHUNKS = BM * A_CPR, A_PER_THREAD = (A_CHUNKS + NT - 1) / NT;
constexpr int A_BYTES = BM * ROW * 2;
constexpr int B_BYTES = NT * NS * UNITS * 16;
constexpr int SCALE_BYTES = WARPS * NS * 64, ZERO_BYTES = ZEROS ? WARPS * NS * 16 : 0;
constexpr int STAGE_BYTES = A_BYTES + B_BYTES + SCALE_BYTES + ZERO_BYTES;
constexpr int ACC = MT * 2 * NS * 4;   // accumulators of a lane
static_assert(WARPS % WK == 0 && NS * 4 <= 32, "tile shape");
static_assert(STAGE_BYTES % 16 == 0, "16-byte stages");
}  // namespace

// d = a * b + c on bf16 pairs (the one bf16x2 arithmetic sm_80 has).
__device__ __forceinline__ unsigned int fma_bf16x2(unsigned int a, unsigned int b, unsigned int c) {
  unsigned int d;
  asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
}
#define BF16X2_ONE 0x3f803f80u
#define BF16X2_NEG_ZERO 0x80008000u
#define BF16X2_2P120 0x7b807b80u  // 2^120 in both halves
#define MAGIC 8388608.f            // 2^23

__device__ __forceinline__ unsigned int bf16x2_splat(float f) {
  const unsigned int h = f32_to_bf16(f);
  return h | (h << 16);
}

// The per-tile decode constants of one strip's group: int4 (-(128 + zero), scale) as bf16 pairs,
// int8 (2^23 + zero, scale) and fp8 (unused, scale) as floats; [tile] is the n8 tile (rows g, 8 + g).
struct GroupParams {
  unsigned int neg_zero2[2], scale2[2];
  float zero[2], scale[2];
};

__device__ __forceinline__ GroupParams group_params(const float* s, const unsigned char* z, int g) {
  GroupParams p;
#pragma unroll
  for (int tile = 0; tile < 2; tile++) {
    const float scale = s[8 * tile + g];
    const float zero = ZEROS ? (float)z[8 * tile + g] : (FORMAT == 0 ? 8.f : 128.f);
    p.scale[tile] = scale;
    p.zero[tile] = FORMAT == 0 ? 128.f + zero : MAGIC + zero;
    p.scale2[tile] = bf16x2_splat(scale);
    p.neg_zero2[tile] = bf16x2_splat(-128.f - zero);
  }
  return p;
}

// The B fragments (b[tile][0], b[tile][1]) of k step `step` (0..3) of one strip from the lane's
// stage units u.
__device__ __forceinline__ void decode_step(const uint4* u, int step, const GroupParams& p, unsigned int (&b)[2][2]) {
#if FORMAT == 0
  const unsigned int word = step == 0 ? u[0].x : step == 1 ? u[0].y : step == 2 ? u[0].z : u[0].w;
#pragma unroll
  for (int pair = 0; pair < 4; pair++) {
    const int tile = pair >> 1;
    const unsigned int t = ((word >> (4 * pair)) & 0x000f000fu) | 0x43004300u;
    b[tile][pair & 1] = fma_bf16x2(fma_bf16x2(t, BF16X2_ONE, p.neg_zero2[tile]), p.scale2[tile], BF16X2_NEG_ZERO);
  }
#else
  const uint4 v = u[step >> 1];
  const unsigned int words[2] = {(step & 1) ? v.z : v.x, (step & 1) ? v.w : v.y};
#pragma unroll
  for (int tile = 0; tile < 2; tile++) {
#pragma unroll
    for (int half = 0; half < 2; half++) {
#if FORMAT == 1
      const float lo = (__uint_as_float(__byte_perm(words[tile], 0x4B000000u, 0x7540u + 2 * half)) - p.zero[tile]) * p.scale[tile];
      const float hi = (__uint_as_float(__byte_perm(words[tile], 0x4B000000u, 0x7541u + 2 * half)) - p.zero[tile]) * p.scale[tile];
      b[tile][half] = pack_bf16x2(lo, hi);
#else
      // Bytes 2 half and 2 half + 1 into bits 8..15 of each half, then sign in place and the
      // other 7 bits shifted under bf16's exponent field.
      const unsigned int x = __byte_perm(words[tile], 0u, half ? 0x3424u : 0x1404u);
      const unsigned int h = (x & 0x80008000u) | ((x >> 4) & 0x07f007f0u);
      b[tile][half] = fma_bf16x2(fma_bf16x2(h, BF16X2_2P120, BF16X2_NEG_ZERO), p.scale2[tile], BF16X2_NEG_ZERO);
#endif
    }
  }
#endif
}

// grid (ceil(n / (16 NS WN)), ceil(m / BM), splits), block NT, dynamic shared memory
// marlin_shared_bytes (marlin-gemm.ts: STAGES stages, or the WK reduction if larger).
// x [m, k] bf16 in the weight's stored column order; codes, scales f32 and zeros u8 (ZEROS) in
// marlin-layout.cu's layout; n a multiple of 16, k of 64, group_size of 64 (or k: one group).
// Split z covers stages [z · split_stages, ...) of SK columns. out [m, n] bf16 (+ bias); with splits,
// through partial [splits, m, n] f32 and arrival (a counter a tile: CudaDevice.arrivalCounters).
extern "C" __global__ void __launch_bounds__(NT) marlin_gemm_kernel(bf16* __restrict__ out, float* __restrict__ partial, unsigned int* __restrict__ arrival,
                                                                    const bf16* __restrict__ x,
                                                                    const uint4* __restrict__ codes, const float* __restrict__ scales,
                                                                    const unsigned char* __restrict__ zeros, const bf16* __restrict__ bias, int m,
                                                                    int n, int k, int groups, int group_size, int split_stages) {
  PDL_PROLOGUE();
  extern __shared__ __align__(16) unsigned char smem[];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wn = warp % WN, wk = warp / WN;
  const int strips = n / 16;
  const int m0 = blockIdx.y * BM;
  const int stages_total = (k + SK - 1) / SK;
  const int t_begin = blockIdx.z * split_stages, t_end = min(stages_total, t_begin + split_stages);
  // 16-byte units of a strip along k (int4: 64 columns a unit, 8-bit: 32).
  const int strip_units = k / (WARP_K / UNITS);

  int strip[NS];
#pragma unroll
  for (int s = 0; s < NS; s++) strip[s] = min((blockIdx.x * WN + wn) * NS + s, strips - 1);
  const bf16* a_src[A_PER_THREAD];
#pragma unroll
  for (int i = 0; i < A_PER_THREAD; i++) {
    const int r = (tid + i * NT) / A_CPR;
    a_src[i] = tid + i * NT < A_CHUNKS && m0 + r < m ? x + (long long)(m0 + r) * k : nullptr;
  }

  auto a_tile = [&](int stage) { return reinterpret_cast<bf16*>(smem + stage * STAGE_BYTES); };
  auto b_units = [&](int stage) { return reinterpret_cast<uint4*>(smem + stage * STAGE_BYTES + A_BYTES); };
  auto scale_tile = [&](int stage) { return reinterpret_cast<float*>(smem + stage * STAGE_BYTES + A_BYTES + B_BYTES) + warp * NS * 16; };
  auto zero_tile = [&](int stage) { return smem + stage * STAGE_BYTES + A_BYTES + B_BYTES + SCALE_BYTES + warp * NS * 16; };

  auto load_stage = [&](int stage, int t) {
    stage_bf16_rows<BM, A_CPR, NT>(a_tile(stage), a_src, t * SK, k, ROW, x);
    const int kw = t * SK + wk * WARP_K;
    if (kw >= k) return;
    uint4* b = b_units(stage);
#pragma unroll
    for (int s = 0; s < NS; s++)
#pragma unroll
      for (int u = 0; u < UNITS; u++) {
        const long long unit = (long long)strip[s] * strip_units + kw / (WARP_K / UNITS) + u;
        cp_async16(b + (s * UNITS + u) * NT + tid, codes + unit * 32 + lane, 16);
      }
    const int group = kw / group_size;
    if (lane < 4 * NS) {
      const int s = lane >> 2;
      cp_async16(scale_tile(stage) + lane * 4, scales + ((long long)strip[s] * groups + group) * 16 + (lane & 3) * 4, 16);
    }
#if ZEROS
    if (lane >= 16 && lane < 16 + NS) {
      const int s = lane - 16;
      cp_async16(zero_tile(stage) + s * 16, zeros + ((long long)strip[s] * groups + group) * 16, 16);
    }
#endif
  };

  float acc[MT][2 * NS][4];
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int nt = 0; nt < 2 * NS; nt++) acc[mt][nt][0] = acc[mt][nt][1] = acc[mt][nt][2] = acc[mt][nt][3] = 0.f;

#pragma unroll
  for (int s = 0; s < STAGES - 1; s++) {
    if (t_begin + s < t_end) load_stage(s, t_begin + s);
    cp_async_commit();
  }
  const int g = lane >> 2;
  for (int t = t_begin; t < t_end; t++) {
    const int stage = (t - t_begin) % STAGES;
    cp_async_wait<STAGES - 2>();
    __syncthreads();
    // The stage refilled here was read in the previous iteration, which every thread has left.
    const int next = t + STAGES - 1;
    if (next < t_end) load_stage((next - t_begin) % STAGES, next);
    cp_async_commit();
    if (t * SK + wk * WARP_K >= k) continue;

    uint4 units[NS][UNITS];
    GroupParams params[NS];
    const uint4* b = b_units(stage);
#pragma unroll
    for (int s = 0; s < NS; s++) {
#pragma unroll
      for (int u = 0; u < UNITS; u++) units[s][u] = b[(s * UNITS + u) * NT + tid];
      params[s] = group_params(scale_tile(stage) + s * 16, zero_tile(stage) + s * 16, g);
    }
    const bf16* sa = a_tile(stage) + wk * WARP_K;
#pragma unroll
    for (int step = 0; step < WARP_K / 16; step++) {
      unsigned int af[MT][4];
      load_a_fragments<MT>(af, sa, ROW, step);
#pragma unroll
      for (int s = 0; s < NS; s++) {
        unsigned int bf[2][2];
        decode_step(units[s], step, params[s], bf);
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
          mma_bf16_16816(acc[mt][2 * s], af[mt], bf[0][0], bf[0][1]);
          mma_bf16_16816(acc[mt][2 * s + 1], af[mt], bf[1][0], bf[1][1]);
        }
      }
    }
  }
  cp_async_wait<0>();

  // The WK warps of the same strips add their sums: warps wk > 0 leave theirs in shared memory for
  // warp wk 0, which writes the tile.
  const bool writes = wk == 0;
  if (WK > 1) {
    __syncthreads();
    float* red = reinterpret_cast<float*>(smem);
    if (wk > 0) {
      float* mine = red + ((wk - 1) * WN + wn) * 32 * ACC;
#pragma unroll
      for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int nt = 0; nt < 2 * NS; nt++)
#pragma unroll
          for (int e = 0; e < 4; e++) mine[((mt * 2 * NS + nt) * 4 + e) * 32 + lane] = acc[mt][nt][e];
    }
    __syncthreads();
    if (writes) {
#pragma unroll
      for (int j = 0; j < WK - 1; j++) {
        const float* theirs = red + (j * WN + wn) * 32 * ACC;
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
          for (int nt = 0; nt < 2 * NS; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[mt][nt][e] += theirs[((mt * 2 * NS + nt) * 4 + e) * 32 + lane];
      }
    }
  }

  const int first_strip = (blockIdx.x * WN + wn) * NS;
  if (writes) for_each_accumulator_pair<MT, 2 * NS>([&](int mt, int nt, int half, int tr, int tc) {
    const int r = m0 + tr;
    // Accumulator tile nt is rows 8 (nt % 2) .. + 7 of strip nt / 2: tc = 16 (nt / 2) + 8 (nt % 2) + 2 (lane % 4).
    if (r >= m || first_strip + nt / 2 >= strips) return;
    const int col = first_strip * 16 + tc;
    const float v0 = acc[mt][nt][2 * half], v1 = acc[mt][nt][2 * half + 1];
    if (gridDim.z > 1) {
      *reinterpret_cast<float2*>(partial + ((long long)blockIdx.z * m + r) * n + col) = make_float2(v0, v1);
    } else {
      const float b0 = bias == nullptr ? 0.f : bf16_to_f32(bias[col]), b1 = bias == nullptr ? 0.f : bf16_to_f32(bias[col + 1]);
      *reinterpret_cast<unsigned int*>(out + (long long)r * n + col) = pack_bf16x2(v0 + b0, v1 + b1);
    }
  });
  if (gridDim.z > 1) {
    const int c0 = blockIdx.x * WN * NS * 16;
    split_sum_if_last(out, partial, bias, m, n, gridDim.z, m0, min(m, m0 + BM), c0, min(n, c0 + WN * NS * 16), arrival + blockIdx.y * gridDim.x + blockIdx.x);
  }
}
