// Multi-head latent attention in its absorbed form (layers/mla-attention.ts), over a paged pool of
// rows [latent (LATENT) | rotated key part (ROPE)], one row per token shared by every head.
//
// mla_attention_kernel serves decode and prefill alike. A CTA takes BM = 16 * MT query rows, where
// a row is one (token, head) pair of a work item: a decode sequence's token, or a 64-token prefill
// tile, flattened token-major (row f is token f / numHeads, head f % numHeads). All its rows belong
// to one sequence and so share the keys: each KV tile [BN keys x (LATENT + ROPE)] is loaded once,
// with cp.async, into shared memory for all of them (as FlashMLA does), and serves as K for the
// scores and, its first LATENT columns, as V. On bf16 tensor cores (mma.sync m16n8k16):
//   S [BM x BN] = Q [BM x (LATENT + ROPE)] . K^T   (warp w: the tile's keys 8w .. 8w + 7)
//   O [BM x LATENT] += P [BM x BN] . V             (warp w: columns w * LATENT / NW ..)
// with an online softmax whose row maxima are exchanged through shared memory. Decode items may be
// split over the context (grid.z partitions, Flash-Decoding); each partition writes (max, sum,
// unnormalized O) and mla_reduce_kernel merges them.
#include "common.cuh"
#include "mma.cuh"

// nvcc-check: -DLATENT=512 -DROPE=64 -DMT=1 -DSTAGES=2 -DKV_DTYPE=0
// nvcc-check: -DLATENT=512 -DROPE=64 -DMT=4 -DSTAGES=2 -DKV_DTYPE=0
// nvcc-check: -DLATENT=512 -DROPE=64 -DMT=4 -DSTAGES=1 -DKV_DTYPE=0
// nvcc-check: -DLATENT=32 -DROPE=8 -DMT=1 -DSTAGES=2 -DKV_DTYPE=0
// nvcc-check: -DLATENT=64 -DROPE=16 -DMT=2 -DSTAGES=2 -DKV_DTYPE=0
// nvcc-check: -DLATENT=256 -DROPE=32 -DMT=3 -DSTAGES=2 -DKV_DTYPE=0
// nvcc-check: -DLATENT=512 -DROPE=64 -DMT=4 -DSTAGES=2 -DKV_DTYPE=1
// nvcc-check: -DLATENT=64 -DROPE=16 -DMT=2 -DSTAGES=1 -DKV_DTYPE=2

#if !defined(LATENT) || !defined(ROPE) || !defined(MT) || !defined(STAGES) || !defined(KV_DTYPE)
#error "compile with -DLATENT=<latent dim> -DROPE=<rope dim> -DMT=<16-row query tiles per CTA> -DSTAGES=<1 or 2> -DKV_DTYPE=<0 bf16|1 fp8|2 int8>"
#endif

namespace {
// Warps per CTA: as many (up to 8) as split LATENT into column slices of a multiple of 16.
__host__ __device__ constexpr int warps_for(int latent) { return latent % 128 == 0 ? 8 : latent % 64 == 0 ? 4 : 2; }

constexpr int L = LATENT;
constexpr int D = LATENT + ROPE;         // cached row width
constexpr int DP = (D + 15) / 16 * 16;   // padded to the mma k-step
constexpr int CH = DP / 8;               // 16-byte chunks per padded row
constexpr int DCH = D / 8;               // chunks holding data
constexpr int LCH = L / 8;               // chunks of the latent
constexpr int BM = 16 * MT;              // query rows per CTA
constexpr int NW = warps_for(L);
constexpr int NT = 32 * NW;
constexpr int BN = 8 * NW;               // keys per tile: 8 per warp for the scores
constexpr int CW = L / NW;               // output columns per warp
constexpr int NCW = CW / 8;              // their 8-column mma tiles
static_assert(L % 32 == 0 && ROPE % 8 == 0, "latent must be a multiple of 32, rope a multiple of 8");
static_assert(MT >= 1 && MT <= 4 && (STAGES == 1 || STAGES == 2), "1..4 row tiles, 1 or 2 KV stages");
static_assert(CW % 16 == 0 && BN % 16 == 0, "each warp's columns and each tile's keys span whole mma k-steps");

// Shared rows of `chunks` 16-byte chunks. A warp's ldmatrix reads one chunk column of 8 consecutive
// rows; with rows a multiple of 128 bytes apart those would hit the same banks, so such rows are
// swizzled (chunk c of row r stored at c ^ (r % 8)), and others padded by one chunk.
template <int CHUNKS>
struct SmemRows {
  static constexpr bool SWIZZLE = CHUNKS % 8 == 0;
  static constexpr int STRIDE = SWIZZLE ? CHUNKS : CHUNKS + 1;
  // Element offset (in bf16) of chunk c of row r.
  __device__ static __forceinline__ int at(int r, int c) { return (r * STRIDE + (SWIZZLE ? (c ^ (r & 7)) : c)) * 8; }
};
using RowsKV = SmemRows<CH>;       // the Q tile and the KV tiles
using RowsP = SmemRows<BN / 8>;    // probabilities [BM x BN]
}  // namespace

// grid (ceil(rows per item / BM), numItems, numPartitions), block NT. An item is items[i * item_stride]
// (its sequence), plus, when item_stride is 2, items[2i + 1]: its first query row within the
// sequence's chunk; it covers up to tokens_per_item of the chunk's tokens. Keys [part * partition_size,
// + partition_size) of the visible ones. Dynamic shared memory (bytes): mla_shared_bytes() in mla.ts.
// q_latent [numTokens, H * LATENT], q [numTokens, H * q_width] (rotary part of head h at
// h * q_width + nope); out [numTokens, H * LATENT]; part_acc [numItems, H, numPartitions, LATENT],
// part_ml [..., 2] when split (decode items only: one token each).
extern "C" __global__ void __launch_bounds__(NT) mla_attention_kernel(
    bf16* __restrict__ out, float* __restrict__ part_acc, float* __restrict__ part_ml,
    const bf16* __restrict__ q_latent, const bf16* __restrict__ q, const unsigned char* __restrict__ pool,
    const int* __restrict__ items, int item_stride, int tokens_per_item, const int* __restrict__ query_start,
    const int* __restrict__ positions, const int* __restrict__ seq_lens, const int* __restrict__ block_tables,
    int max_blocks_per_seq, int block_size, int num_heads, int q_width, int nope, float scale_log2,
    int partition_size, int num_partitions, const float* __restrict__ row_scales, float row_scale) {
  PDL_PROLOGUE();
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* s_q = reinterpret_cast<bf16*>(smem);                 // [BM] rows
  bf16* s_kv = s_q + BM * RowsKV::STRIDE * 8;                // [STAGES][BN] rows
  bf16* s_p = s_kv + STAGES * BN * RowsKV::STRIDE * 8;       // [BM] rows of BN
  float* s_red = reinterpret_cast<float*>(s_p + BM * RowsP::STRIDE * 8);  // [NW][BM] row maxima, then sums

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, t4 = lane & 3;
  const int seq = items[blockIdx.y * item_stride];
  const int first_row = item_stride == 2 ? items[blockIdx.y * 2 + 1] : 0;
  const int qstart = query_start[seq];
  const int tokens = min(tokens_per_item, query_start[seq + 1] - qstart - first_row);
  const int f0 = blockIdx.x * BM;  // first flattened (token, head) row of this CTA
  const int rows = min(BM, tokens * num_heads - f0);
  if (rows <= 0) return;
  const int token0 = qstart + first_row;
  const int k_end = min(seq_lens[seq], positions[token0 + (f0 + rows - 1) / num_heads] + 1);
  const int k_begin = blockIdx.z * partition_size;
  const int k_stop = min(k_end, k_begin + partition_size);

  if (k_begin >= k_stop) {  // a shorter sequence of a split decode: nothing visible in this partition
    for (int r = tid; r < rows; r += NT) {
      const long long at = ((long long)blockIdx.y * num_heads + f0 + r) * num_partitions + blockIdx.z;
      part_ml[at * 2] = NEG_INF;
      part_ml[at * 2 + 1] = 0.f;
    }
    return;
  }

  // Zero the padding chunks of every Q and KV row once: the mma reads them, cp.async never writes them.
  if (DP != D) {
    for (int r = tid; r < BM + STAGES * BN; r += NT)
      for (int c = DCH; c < CH; c++) *reinterpret_cast<uint4*>(s_q + RowsKV::at(r, c)) = make_uint4(0, 0, 0, 0);
  }
  // The Q tile: each row's latent query, then its head's rotary part; rows past the item are zeros.
  for (int i = tid; i < BM * DCH; i += NT) {
    const int r = i / DCH, c = i - r * DCH;
    const bool valid = r < rows;
    const int f = f0 + r;
    const long long t = token0 + (valid ? f / num_heads : 0), h = valid ? f % num_heads : 0;
    const bf16* src = c < LCH ? q_latent + (t * num_heads + h) * L + c * 8 : q + (t * num_heads + h) * q_width + nope + (c - LCH) * 8;
    cp_async16(s_q + RowsKV::at(r, c), src, valid ? 16 : 0);
  }
  const int* table = block_tables + (long long)seq * max_blocks_per_seq;
  auto load_kv = [&](int stage, int k0) {
    bf16* dst = s_kv + stage * BN * RowsKV::STRIDE * 8;
    for (int i = tid; i < BN * DCH; i += NT) {
      const int r = i / DCH, c = i - r * DCH;
      const bool valid = k0 + r < k_stop;
#if KV_DTYPE == 0
      const long long src = valid ? kv_slot(table, k0 + r, block_size) * D + c * 8 : 0;
      cp_async16(dst + RowsKV::at(r, c), reinterpret_cast<const bf16*>(pool) + src, valid ? 16 : 0);
#else
      // An 8-bit row is dequantized to bf16 on its way in (through registers: cp.async cannot convert).
      uint4 v = make_uint4(0, 0, 0, 0);
      if (valid) {
        const long long slot = kv_slot(table, k0 + r, block_size);
        v = dequantize8<KV_DTYPE>(*reinterpret_cast<const uint2*>(pool + slot * D + c * 8), KV_DTYPE == 2 ? row_scales[slot] : row_scale);
      }
      *reinterpret_cast<uint4*>(dst + RowsKV::at(r, c)) = v;
#endif
    }
    cp_async_commit();
  };

  // This thread's rows: r = 16 mt + g + 8 hh (the mma accumulator layout), their query positions.
  int row_pos[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
      const int r = mt * 16 + g + hh * 8;
      row_pos[mt][hh] = r < rows ? positions[token0 + (f0 + r) / num_heads] : -1;  // -1: a padding row, all keys masked
    }
  float m[MT][2], l[MT][2], o[MT][NCW][4];
#pragma unroll
  for (int mt = 0; mt < MT; mt++) {
    m[mt][0] = m[mt][1] = NEG_INF;
    l[mt][0] = l[mt][1] = 0.f;
#pragma unroll
    for (int n = 0; n < NCW; n++) o[mt][n][0] = o[mt][n][1] = o[mt][n][2] = o[mt][n][3] = 0.f;
  }

  const int num_tiles = (k_stop - k_begin + BN - 1) / BN;
  load_kv(0, k_begin);  // committed together with the Q tile
  for (int it = 0; it < num_tiles; it++) {
    const int k0 = k_begin + it * BN;
    cp_async_wait<0>();
    __syncthreads();  // the tile is in; every warp is done with the previous one
    if (STAGES == 2 && it + 1 < num_tiles) load_kv((it + 1) & 1, k0 + BN);
    const bf16* kv = s_kv + (STAGES == 2 ? (it & 1) : 0) * BN * RowsKV::STRIDE * 8;

    // Scores of this warp's 8 keys for every row.
    float s[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) s[mt][0] = s[mt][1] = s[mt][2] = s[mt][3] = 0.f;
#pragma unroll 4
    for (int kk = 0; kk < DP / 16; kk++) {
      unsigned int b[2];
      ldmatrix_x2(b, kv + RowsKV::at(warp * 8 + (lane & 7), 2 * kk + ((lane >> 3) & 1)));
#pragma unroll
      for (int mt = 0; mt < MT; mt++) {
        unsigned int a[4];
        ldmatrix_x4(a, s_q + RowsKV::at(mt * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, 2 * kk + (lane >> 4)));
        mma_bf16_16816(s[mt], a, b[0], b[1]);
      }
    }

    // Causal mask (and the partition's end) in the log2 domain; each row's maximum over the warp's keys.
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int hh = 0; hh < 2; hh++) {
        float mx = NEG_INF;
#pragma unroll
        for (int e = 0; e < 2; e++) {
          const int key = k0 + warp * 8 + t4 * 2 + e;
          float& v = s[mt][hh * 2 + e];
          v = key < k_stop && key <= row_pos[mt][hh] ? v * scale_log2 : NEG_INF;
          mx = fmaxf(mx, v);
        }
        mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 2));
        if (t4 == 0) s_red[warp * BM + mt * 16 + g + hh * 8] = mx;
      }
    __syncthreads();  // every warp's row maxima are in

    // Online softmax: the tile's row max over all warps, probabilities to shared memory as bf16.
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int hh = 0; hh < 2; hh++) {
        const int r = mt * 16 + g + hh * 8;
        float tile_max = NEG_INF;
#pragma unroll
        for (int w = 0; w < NW; w++) tile_max = fmaxf(tile_max, s_red[w * BM + r]);
        const float m_new = fmaxf(m[mt][hh], tile_max);
        // A row with no visible key yet keeps max -inf; exponentiate against 0 so nothing becomes NaN.
        const float ref = m_new == NEG_INF ? 0.f : m_new;
        const float alpha = fast_exp2(m[mt][hh] - ref);
        m[mt][hh] = m_new;
        const float p0 = fast_exp2(s[mt][hh * 2] - ref), p1 = fast_exp2(s[mt][hh * 2 + 1] - ref);
        l[mt][hh] = l[mt][hh] * alpha + p0 + p1;
#pragma unroll
        for (int n = 0; n < NCW; n++) {
          o[mt][n][hh * 2] *= alpha;
          o[mt][n][hh * 2 + 1] *= alpha;
        }
        *reinterpret_cast<unsigned int*>(s_p + RowsP::at(r, warp) + t4 * 2) = pack_bf16x2(p0, p1);
      }
    __syncthreads();  // P is complete

    // O += P V over the tile's keys, this warp's columns of the latent.
#pragma unroll
    for (int kk = 0; kk < BN / 16; kk++) {
      unsigned int a[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; mt++) ldmatrix_x4(a[mt], s_p + RowsP::at(mt * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, 2 * kk + (lane >> 4)));
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
    if (STAGES == 1 && it + 1 < num_tiles) {
      __syncthreads();  // the only stage is free again
      load_kv(0, k0 + BN);
    }
  }

  // Row sums: this thread's keys, the quad's, then every warp's (s_red is free after the last barrier pair).
  __syncthreads();
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
      float sum = l[mt][hh];
      sum += __shfl_xor_sync(FULL_MASK, sum, 1);
      sum += __shfl_xor_sync(FULL_MASK, sum, 2);
      if (t4 == 0) s_red[warp * BM + mt * 16 + g + hh * 8] = sum;
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
      for (int w = 0; w < NW; w++) total += s_red[w * BM + r];
      const int f = f0 + r;
      const long long t = token0 + f / num_heads, h = f % num_heads;
      if (num_partitions == 1) {
        const float inv = total > 0.f ? 1.f / total : 0.f;
        bf16* dst = out + (t * num_heads + h) * L + warp * CW + t4 * 2;
#pragma unroll
        for (int n = 0; n < NCW; n++)
          *reinterpret_cast<unsigned int*>(dst + n * 8) = pack_bf16x2(o[mt][n][hh * 2] * inv, o[mt][n][hh * 2 + 1] * inv);
      } else {
        const long long at = ((long long)blockIdx.y * num_heads + h) * num_partitions + blockIdx.z;
        float* dst = part_acc + at * L + warp * CW + t4 * 2;
#pragma unroll
        for (int n = 0; n < NCW; n++) *reinterpret_cast<float2*>(dst + n * 8) = make_float2(o[mt][n][hh * 2], o[mt][n][hh * 2 + 1]);
        if (warp == 0 && t4 == 0) {
          part_ml[at * 2] = m[mt][hh];
          part_ml[at * 2 + 1] = total;
        }
      }
    }
}

// Merges the partitions of each (decode item, head): grid (numHeads, numItems). Partitions that saw
// no key carry a sum of 0 and are skipped.
extern "C" __global__ void mla_reduce_kernel(bf16* __restrict__ out, const float* __restrict__ part_acc,
                                             const float* __restrict__ part_ml, const int* __restrict__ items,
                                             const int* __restrict__ query_start, int num_heads, int num_partitions) {
  PDL_PROLOGUE();
  const long long row0 = ((long long)blockIdx.y * num_heads + blockIdx.x) * num_partitions;
  float m = NEG_INF;
  for (int p = 0; p < num_partitions; p++)
    if (part_ml[(row0 + p) * 2 + 1] > 0.f) m = fmaxf(m, part_ml[(row0 + p) * 2]);
  float l = 0.f;
  for (int p = 0; p < num_partitions; p++) {
    const float lp = part_ml[(row0 + p) * 2 + 1];
    if (lp > 0.f) l += fast_exp2(part_ml[(row0 + p) * 2] - m) * lp;
  }
  const float inv = l > 0.f ? 1.f / l : 0.f;
  const long long token = query_start[items[blockIdx.y]];
  for (int d = threadIdx.x; d < L; d += blockDim.x) {
    float acc = 0.f;
    for (int p = 0; p < num_partitions; p++) {
      const float lp = part_ml[(row0 + p) * 2 + 1];
      if (lp > 0.f) acc += fast_exp2(part_ml[(row0 + p) * 2] - m) * part_acc[(row0 + p) * L + d];
    }
    out[(token * num_heads + blockIdx.x) * L + d] = f32_to_bf16(acc * inv);
  }
}
