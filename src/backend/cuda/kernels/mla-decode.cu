// Absorbed MLA decode (layers/mla-attention.ts) in the spirit of FlashMLA: one query token per
// sequence, its heads the M dimension of bf16 tensor-core MMAs, every cached row [latent (LATENT) |
// rope (ROPE)] loaded once into shared memory and used there both as K (all D = LATENT + ROPE
// columns, for the scores) and as V (its first LATENT columns, for the output).
//
// A CTA takes BM = 16 * MT heads of one sequence and one partition of its context (Flash-Decoding:
// grid.z partitions, merged by mla_decode_combine_kernel). The launch has partitions for the longest
// context the block tables hold (graphs replay while sequences grow); each decode uses as many as
// its own keys are worth (decode-split.cuh, whole 64-key tiles) and the other CTAs return at once.
// Per BN = 64-key tile, 8 warps:
//   S [BM x BN] = Q [BM x D] . K^T      warp w: m-tile w % MT, keys (w / MT) * KW .. + KW
//   O [BM x LATENT] += P [BM x BN] . V  warp w: all BM rows, latent columns w * CW .. + CW
// so Q is read from shared memory 8 / MT times per tile and K 1 .. MT times (not 8 times Q, as when
// every warp takes all rows), and O's accumulators (BM x 512 f32) spread over all 256 threads.
//
// Memory: the KV tiles come through a two-stage cp.async ring (one tile of 72 KB in flight while
// the other is computed), and the tile after that is prefetched into L2, so about two tiles per SM
// are on their way at any time. Each thread stages one row of a tile (a quarter of its chunks),
// and its block-table entries are read two tiles ahead, so issuing a tile never waits on a table
// lookup. An 8-bit cache (KV_DTYPE 1 fp8, 2 int8) is read into registers at the start of a tile and
// dequantized into the free stage after it is computed (cp.async cannot convert).
//
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type", and
// "Warp-level matrix load instruction: ldmatrix"), with g = lane / 4, t = lane % 4:
//   A (16x16, row): a0a1 (row g, cols 2t, 2t+1), a2a3 (row g+8, same cols), a4a5 (row g, cols 2t+8,
//     2t+9), a6a7 (row g+8, cols 2t+8, 2t+9). ldmatrix.x4 hands matrix i to register i, lane l
//     holding (row l/4, cols 2(l%4), +1): so lanes 0-15 address rows 0-15 at column 0, lanes 16-31
//     rows 0-15 at column 8 (row lane & 15, chunk lane >> 4).
//   B (16x8, col): b0b1 (k 2t, 2t+1 at column n = g), b2b3 (k 2t+8, 2t+9). For S, B^T is the
//     key-major K tile, so plain ldmatrix rows are keys: matrices (keys 0-7, k 0-7), (keys 0-7, k
//     8-15), (keys 8-15, k 0-7), (keys 8-15, k 8-15). For O, V's k is the key (rows of the tile), so
//     ldmatrix.trans: lane l holds (rows 2(l%4), +1, column l/4) of each 8x8 matrix.
//   C/D (16x8 f32): c0c1 (row g, cols 2t, 2t+1), c2c3 (row g+8, same cols).
#include "common.cuh"
#include "decode-split.cuh"
#include "mma.cuh"

// nvcc-check: -DLATENT=512 -DROPE=64 -DMT=1 -DKV_DTYPE=0
// nvcc-check: -DLATENT=512 -DROPE=64 -DMT=2 -DKV_DTYPE=0
// nvcc-check: -DLATENT=512 -DROPE=64 -DMT=4 -DKV_DTYPE=0
// nvcc-check: -DLATENT=512 -DROPE=64 -DMT=4 -DKV_DTYPE=1
// nvcc-check: -DLATENT=512 -DROPE=64 -DMT=1 -DKV_DTYPE=2
// nvcc-check: -DLATENT=256 -DROPE=32 -DMT=4 -DKV_DTYPE=2
// nvcc-check: -DLATENT=128 -DROPE=16 -DMT=2 -DKV_DTYPE=0

#if !defined(LATENT) || !defined(ROPE) || !defined(MT) || !defined(KV_DTYPE)
#error "compile with -DLATENT=<latent dim> -DROPE=<rope dim> -DMT=<1, 2 or 4 16-head tiles> -DKV_DTYPE=<0 bf16|1 fp8|2 int8>"
#endif

namespace {
constexpr int L = LATENT;
constexpr int D = LATENT + ROPE;  // cached row width
constexpr int CH = D / 8;         // 16-byte bf16 chunks per row
constexpr int LCH = L / 8;        // of which the latent's
constexpr int BM = 16 * MT;       // heads per CTA
constexpr int NW = 8;
constexpr int NT = 32 * NW;
constexpr int BN = 64;            // keys per tile
constexpr int WN = NW / MT;       // warps sharing an m-tile's scores
constexpr int KW = BN / WN;       // keys of each warp's scores: 8, 16 or 32
constexpr int CW = L / NW;        // output columns per warp
constexpr int NCW = CW / 8;       // their 8-column mma tiles
constexpr int ROW_THREADS = NT / BN;                         // threads staging one row of a tile: 4
constexpr int ROW_CHUNKS = (CH + ROW_THREADS - 1) / ROW_THREADS;  // chunks each of them stages
static_assert(MT == 1 || MT == 2 || MT == 4, "1, 2 or 4 row tiles");
static_assert(L % 128 == 0 && ROPE % 16 == 0, "latent a multiple of 128 (16-column slices per warp), rope of 16 (whole k-steps)");
static_assert(NT % BN == 0, "whole threads per staged row");

// Shared rows of CHUNKS 16-byte chunks. ldmatrix reads one chunk column of 8 consecutive rows, and
// the staging writes 4 consecutive chunks of 8 rows: with rows a multiple of 128 bytes long both would
// hit the same banks, so chunk c of row r is stored at c ^ (r % 8) (a permutation within each group
// of 8 chunks; rows not a multiple of 8 chunks are padded by one instead).
template <int CHUNKS>
struct SmemRows {
  static constexpr bool SWIZZLE = CHUNKS % 8 == 0;
  static constexpr int STRIDE = SWIZZLE ? CHUNKS : CHUNKS + 1;
  __device__ static __forceinline__ int at(int r, int c) { return (r * STRIDE + (SWIZZLE ? (c ^ (r & 7)) : c)) * 8; }
};
using RowsKV = SmemRows<CH>;     // the Q tile and the KV tiles
using RowsP = SmemRows<BN / 8>;  // probabilities [BM x BN]

// Bytes of a cached row in the pool: bf16, or one byte per value.
constexpr int POOL_ROW_BYTES = KV_DTYPE == 0 ? D * 2 : D;

// Brings a cached row into L2 ahead of its cp.async: one bulk prefetch on sm_90, one prefetch per
// 128-byte line (lines q, q + 4, .. of the row for quarter q) before.
__device__ __forceinline__ void prefetch_row_l2(const unsigned char* row, int quarter) {
#if __CUDA_ARCH__ >= 900
  if (quarter == 0) asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(row), "r"(POOL_ROW_BYTES) : "memory");
#else
  const unsigned long long first = reinterpret_cast<unsigned long long>(row) & ~127ull;
  const unsigned long long last = (reinterpret_cast<unsigned long long>(row) + POOL_ROW_BYTES - 1) & ~127ull;
  for (unsigned long long line = first + 128ull * quarter; line <= last; line += 128ull * ROW_THREADS)
    asm volatile("prefetch.global.L2 [%0];\n" ::"l"(line));
#endif
}
}  // namespace

// grid (ceil(H / BM), numDecode, numPartitions), block 256, dynamic shared memory
// mlaDecodeSharedBytes() in mla-decode.ts. Decode i is sequence items[i], one query token at
// query_start[seq]; its keys [part * size, + size) of the visible ones, for the split
// decode_split gives its keys (ceil(keys / min_partition_keys) partitions, at most num_partitions).
// q_latent [numTokens, H * LATENT], q [numTokens, H * q_width] (rotary part of head h at
// h * q_width + nope); out [numTokens, H * LATENT]; when split, part_acc [numDecode, H,
// numPartitions, LATENT] (unnormalized, relative to the partition's max) and part_ml [.., 2] (max in
// the log2 domain, sum).
extern "C" __global__ void __launch_bounds__(NT, 1) mla_decode_kernel(
    bf16* __restrict__ out, float* __restrict__ part_acc, float* __restrict__ part_ml,
    const bf16* __restrict__ q_latent, const bf16* __restrict__ q, const unsigned char* __restrict__ pool,
    const int* __restrict__ items, const int* __restrict__ query_start, const int* __restrict__ positions,
    const int* __restrict__ seq_lens, const int* __restrict__ block_tables, int max_blocks_per_seq, int block_size,
    int num_heads, int q_width, int nope, float scale_log2, int min_partition_keys, int num_partitions,
    const float* __restrict__ row_scales, float row_scale) {
  PDL_PROLOGUE();
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* s_q = reinterpret_cast<bf16*>(smem);                               // [BM] rows
  bf16* s_kv = s_q + BM * RowsKV::STRIDE * 8;                              // [2][BN] rows
  bf16* s_p = s_kv + 2 * BN * RowsKV::STRIDE * 8;                          // [BM] rows of BN
  float* s_red = reinterpret_cast<float*>(s_p + BM * RowsP::STRIDE * 8);  // [WN][BM]: row maxima, then sums

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, t4 = lane & 3;
  const int wm = warp % MT, wn = warp / MT;  // this warp's scores: m-tile wm, key slice wn
  const int seq = items[blockIdx.y];
  const long long token = query_start[seq];
  const int h0 = blockIdx.x * BM;
  const int rows = min(BM, num_heads - h0);
  const int k_end = min(seq_lens[seq], positions[token] + 1);
  const DecodeSplit split = decode_split<BN>(k_end, num_partitions, min_partition_keys);
  if ((int)blockIdx.z >= split.used) return;  // a CTA for keys this decode does not have
  const int k_begin = blockIdx.z * split.size;
  const int k_stop = min(k_end, k_begin + split.size);

  if (k_begin >= k_stop) {  // a decode with no visible key: its one partition writes an empty one
    for (int r = tid; r < rows; r += NT) {
      const long long at = ((long long)blockIdx.y * num_heads + h0 + r) * num_partitions + blockIdx.z;
      part_ml[at * 2] = NEG_INF;
      part_ml[at * 2 + 1] = 0.f;
    }
    return;
  }

  // The Q tile: each head's latent query, then its rotary part; heads past the last are zeros.
  for (int i = tid; i < BM * CH; i += NT) {
    const int r = i / CH, c = i - r * CH;
    const bool valid = r < rows;
    const long long head = token * num_heads + h0 + (valid ? r : 0);
    const bf16* src = c < LCH ? q_latent + head * L + c * 8 : q + head * q_width + nope + (c - LCH) * 8;
    cp_async16(s_q + RowsKV::at(r, c), src, valid ? 16 : 0);
  }

  // Staging: thread tid takes row sr = tid / 4 of every tile, chunks sq, sq + 4, ...
  const int sr = tid / ROW_THREADS, sq = tid % ROW_THREADS;
  const int* table = block_tables + (long long)seq * max_blocks_per_seq;
  const int num_tiles = (k_stop - k_begin + BN - 1) / BN;
  // This thread's row of tile j: its pool slot, or -1 past the partition.
  auto slot_of = [&](int j) -> long long {
    const int key = k_begin + j * BN + sr;
    return j < num_tiles && key < k_stop ? kv_slot(table, key, block_size) : -1;
  };
  auto issue = [&](int stage, long long slot) {
#if KV_DTYPE == 0
    bf16* dst = s_kv + stage * BN * RowsKV::STRIDE * 8;
    const bf16* src = reinterpret_cast<const bf16*>(pool) + (slot < 0 ? 0 : slot * D);
#pragma unroll
    for (int j = 0; j < ROW_CHUNKS; j++) {
      const int c = sq + j * ROW_THREADS;
      if (c < CH) cp_async16(dst + RowsKV::at(sr, c), src + c * 8, slot < 0 ? 0 : 16);
    }
#endif
    cp_async_commit();
  };
#if KV_DTYPE != 0
  // An 8-bit tile's codes wait in registers while the previous tile is computed.
  uint2 codes[ROW_CHUNKS];
  float code_scale = 0.f;
  long long codes_slot = -1;
  auto read_codes = [&](long long slot) {
    codes_slot = slot;
    if (slot < 0) return;
    code_scale = KV_DTYPE == 2 ? row_scales[slot] : row_scale;
#pragma unroll
    for (int j = 0; j < ROW_CHUNKS; j++) {
      const int c = sq + j * ROW_THREADS;
      if (c < CH) codes[j] = *reinterpret_cast<const uint2*>(pool + slot * D + c * 8);
    }
  };
  auto store_codes = [&](int stage) {
    bf16* dst = s_kv + stage * BN * RowsKV::STRIDE * 8;
#pragma unroll
    for (int j = 0; j < ROW_CHUNKS; j++) {
      const int c = sq + j * ROW_THREADS;
      if (c < CH) *reinterpret_cast<uint4*>(dst + RowsKV::at(sr, c)) = codes_slot < 0 ? make_uint4(0, 0, 0, 0) : dequantize8<KV_DTYPE>(codes[j], code_scale);
    }
  };
  read_codes(slot_of(0));
  store_codes(0);
#endif
  issue(0, slot_of(0));  // commits the Q tile (and tile 0 of a bf16 cache)
  long long slot_next = slot_of(1), slot_after = slot_of(2);

  float m_o[MT][2], o[MT][NCW][4];  // running max of this thread's output rows (log2 domain), their accumulators
  float m_s[2], l_s[2];             // the same max for its score rows (computed alike), their partial sums
#pragma unroll
  for (int mt = 0; mt < MT; mt++) {
    m_o[mt][0] = m_o[mt][1] = NEG_INF;
#pragma unroll
    for (int n = 0; n < NCW; n++) o[mt][n][0] = o[mt][n][1] = o[mt][n][2] = o[mt][n][3] = 0.f;
  }
  m_s[0] = m_s[1] = NEG_INF;
  l_s[0] = l_s[1] = 0.f;

  for (int it = 0; it < num_tiles; it++) {
    const int k0 = k_begin + it * BN;
    cp_async_wait<0>();
    __syncthreads();  // tile `it` is in; every warp is done with tile it - 1, its stage, P and s_red
    // Tile it + 1 into the free stage, tile it + 2 towards L2, the table entry of tile it + 3. (No
    // copy is issued past the last tile: none may still be landing when the CTA exits.)
    if (it + 1 < num_tiles) {
#if KV_DTYPE == 0
      issue((it + 1) & 1, slot_next);
#else
      read_codes(slot_next);
#endif
    }
    if (slot_after >= 0) prefetch_row_l2(pool + slot_after * POOL_ROW_BYTES, sq);
    slot_next = slot_after;
    slot_after = slot_of(it + 3);
    const bf16* kv = s_kv + (it & 1) * BN * RowsKV::STRIDE * 8;

    // S for this warp's 16 rows and KW keys; two accumulator sets when KW is one n-tile, so that
    // consecutive k-steps do not wait on each other's MMA.
    constexpr int NS8 = KW / 8;
    constexpr int SETS = NS8 == 1 ? 2 : 1;
    float s[SETS][NS8][4];
#pragma unroll
    for (int a = 0; a < SETS; a++)
#pragma unroll
      for (int n = 0; n < NS8; n++) s[a][n][0] = s[a][n][1] = s[a][n][2] = s[a][n][3] = 0.f;
#pragma unroll 4
    for (int kk = 0; kk < D / 16; kk++) {
      unsigned int a[4];
      ldmatrix_x4(a, s_q + RowsKV::at(wm * 16 + (lane & 15), 2 * kk + (lane >> 4)));
      if constexpr (NS8 == 1) {
        unsigned int b[2];
        ldmatrix_x2(b, kv + RowsKV::at(wn * KW + (lane & 7), 2 * kk + ((lane >> 3) & 1)));
        mma_bf16_16816(s[kk & (SETS - 1)][0], a, b[0], b[1]);
      } else {
#pragma unroll
        for (int nn = 0; nn < NS8 / 2; nn++) {
          unsigned int b[4];
          ldmatrix_x4(b, kv + RowsKV::at(wn * KW + nn * 16 + (lane & 7) + (lane >> 4) * 8, 2 * kk + ((lane >> 3) & 1)));
          mma_bf16_16816(s[0][2 * nn], a, b[0], b[1]);
          mma_bf16_16816(s[0][2 * nn + 1], a, b[2], b[3]);
        }
      }
    }
    if constexpr (SETS == 2) {
#pragma unroll
      for (int e = 0; e < 4; e++) s[0][0][e] += s[1][0][e];
    }

    // Keys past the partition are masked; scores go to the log2 domain; each row's max over the warp.
#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
      float mx = NEG_INF;
#pragma unroll
      for (int n = 0; n < NS8; n++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
          float& v = s[0][n][hh * 2 + e];
          v = k0 + wn * KW + n * 8 + t4 * 2 + e < k_stop ? v * scale_log2 : NEG_INF;
          mx = fmaxf(mx, v);
        }
      mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 2));
      if (t4 == 0) s_red[wn * BM + wm * 16 + g + hh * 8] = mx;
    }
    __syncthreads();  // every warp's row maxima are in

    // The tile's row max over all warps, as each thread needs it for its score rows and its output rows.
    auto new_max = [&](float running, int r) {
      float m = running;
#pragma unroll
      for (int w = 0; w < WN; w++) m = fmaxf(m, s_red[w * BM + r]);
      return m;
    };
    // A row with no visible key yet keeps max -inf; exponentiate against 0 so nothing becomes NaN.
#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
      const int r = wm * 16 + g + hh * 8;
      const float m_new = new_max(m_s[hh], r);
      const float ref = m_new == NEG_INF ? 0.f : m_new;
      float sum = 0.f;
#pragma unroll
      for (int n = 0; n < NS8; n++) {
        const float p0 = fast_exp2(s[0][n][hh * 2] - ref), p1 = fast_exp2(s[0][n][hh * 2 + 1] - ref);
        sum += p0 + p1;
        *reinterpret_cast<unsigned int*>(s_p + RowsP::at(r, (wn * KW + n * 8) / 8) + t4 * 2) = pack_bf16x2(p0, p1);
      }
      l_s[hh] = l_s[hh] * fast_exp2(m_s[hh] - ref) + sum;
      m_s[hh] = m_new;
    }
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int hh = 0; hh < 2; hh++) {
        const float m_new = new_max(m_o[mt][hh], mt * 16 + g + hh * 8);
        const float alpha = fast_exp2(m_o[mt][hh] - (m_new == NEG_INF ? 0.f : m_new));
        m_o[mt][hh] = m_new;
#pragma unroll
        for (int n = 0; n < NCW; n++) {
          o[mt][n][hh * 2] *= alpha;
          o[mt][n][hh * 2 + 1] *= alpha;
        }
      }
    __syncthreads();  // P is complete

    // O += P V: all rows, this warp's CW latent columns, over the tile's keys.
#pragma unroll
    for (int kk = 0; kk < BN / 16; kk++) {
      unsigned int a[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; mt++) ldmatrix_x4(a[mt], s_p + RowsP::at(mt * 16 + (lane & 15), 2 * kk + (lane >> 4)));
#pragma unroll
      for (int j = 0; j < NCW / 2; j++) {
        unsigned int b[4];
        ldmatrix_x4_trans(b, kv + RowsKV::at(kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, warp * (CW / 8) + 2 * j + (lane >> 4)));
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
          mma_bf16_16816(o[mt][2 * j], a[mt], b[0], b[1]);
          mma_bf16_16816(o[mt][2 * j + 1], a[mt], b[2], b[3]);
        }
      }
    }
#if KV_DTYPE != 0
    if (it + 1 < num_tiles) store_codes((it + 1) & 1);  // the stage tile it - 1 used; read after the next barrier
#endif
  }

  // Row sums: this thread's keys, its quad's, then the WN warps sharing the row.
  __syncthreads();  // every warp is past its last read of s_red
#pragma unroll
  for (int hh = 0; hh < 2; hh++) {
    float sum = l_s[hh];
    sum += __shfl_xor_sync(FULL_MASK, sum, 1);
    sum += __shfl_xor_sync(FULL_MASK, sum, 2);
    if (t4 == 0) s_red[wn * BM + wm * 16 + g + hh * 8] = sum;
  }
  __syncthreads();

#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
      const int r = mt * 16 + g + hh * 8;
      if (r >= rows) continue;
      float total = 0.f;
#pragma unroll
      for (int w = 0; w < WN; w++) total += s_red[w * BM + r];
      const long long h = h0 + r;
      if (split.used == 1) {
        const float inv = total > 0.f ? 1.f / total : 0.f;
        bf16* dst = out + (token * num_heads + h) * L + warp * CW + t4 * 2;
#pragma unroll
        for (int n = 0; n < NCW; n++)
          *reinterpret_cast<unsigned int*>(dst + n * 8) = pack_bf16x2(o[mt][n][hh * 2] * inv, o[mt][n][hh * 2 + 1] * inv);
      } else {
        const long long at = ((long long)blockIdx.y * num_heads + h) * num_partitions + blockIdx.z;
        float* dst = part_acc + at * L + warp * CW + t4 * 2;
#pragma unroll
        for (int n = 0; n < NCW; n++) *reinterpret_cast<float2*>(dst + n * 8) = make_float2(o[mt][n][hh * 2], o[mt][n][hh * 2 + 1]);
        if (warp == 0 && t4 == 0) {
          part_ml[at * 2] = m_o[mt][hh];
          part_ml[at * 2 + 1] = total;
        }
      }
    }
}

// Merges the partitions of each (decode, head): grid (numHeads, numDecode), block 128, dynamic
// shared memory numPartitions floats. Only the partitions the decode used (the same decode_split as
// mla_decode_kernel's) are read; with one, that kernel wrote the output itself. Each partition's
// weight 2^(m_p - m) / l is computed once into shared memory; partitions that saw no key (sum 0)
// weigh 0. Thread i sums columns 4i .. 4i + 3.
extern "C" __global__ void __launch_bounds__(128) mla_decode_combine_kernel(
    bf16* __restrict__ out, const float* __restrict__ part_acc, const float* __restrict__ part_ml,
    const int* __restrict__ items, const int* __restrict__ query_start, const int* __restrict__ positions,
    const int* __restrict__ seq_lens, int num_heads, int num_partitions, int min_partition_keys) {
  PDL_PROLOGUE();
  extern __shared__ float s_weight[];
  __shared__ float s_inv;
  const int seq = items[blockIdx.y];
  const long long token = query_start[seq];
  const int used = decode_split<BN>(min(seq_lens[seq], positions[token] + 1), num_partitions, min_partition_keys).used;
  if (used == 1) return;
  const long long row0 = ((long long)blockIdx.y * num_heads + blockIdx.x) * num_partitions;
  const float* ml = part_ml + row0 * 2;
  if (threadIdx.x < 32) {
    float m = NEG_INF;
    for (int p = threadIdx.x; p < used; p += 32)
      if (ml[p * 2 + 1] > 0.f) m = fmaxf(m, ml[p * 2]);
    for (int off = 16; off > 0; off >>= 1) m = fmaxf(m, __shfl_xor_sync(FULL_MASK, m, off));
    float l = 0.f;
    for (int p = threadIdx.x; p < used; p += 32) {
      const float lp = ml[p * 2 + 1];
      const float w = lp > 0.f ? fast_exp2(ml[p * 2] - m) : 0.f;
      s_weight[p] = w;
      l += w * lp;
    }
    for (int off = 16; off > 0; off >>= 1) l += __shfl_xor_sync(FULL_MASK, l, off);
    if (threadIdx.x == 0) s_inv = l > 0.f ? 1.f / l : 0.f;
  }
  __syncthreads();
  const float inv = s_inv;
  for (int d = threadIdx.x * 4; d < L; d += 128 * 4) {
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    for (int p = 0; p < used; p++) {
      const float w = s_weight[p];
      if (w == 0.f) continue;
      const float4 v = *reinterpret_cast<const float4*>(part_acc + (row0 + p) * L + d);
      acc[0] += w * v.x;
      acc[1] += w * v.y;
      acc[2] += w * v.z;
      acc[3] += w * v.w;
    }
    const uint2 packed = make_uint2(pack_bf16x2(acc[0] * inv, acc[1] * inv), pack_bf16x2(acc[2] * inv, acc[3] * inv));
    *reinterpret_cast<uint2*>(out + (token * num_heads + blockIdx.x) * L + d) = packed;
  }
}
