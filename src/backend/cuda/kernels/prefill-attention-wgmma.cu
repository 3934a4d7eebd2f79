// Prefill attention for Hopper (sm_90a) in the FlashAttention-3 manner: a CTA takes 128 query rows
// of one sequence for one query head with three warpgroups. Warpgroup 0 loads: the Q tile once,
// then K and V tiles of BN keys from the paged cache into a two-stage ring (cp.async, 16 bytes a
// thread, straight into the 128-byte-swizzled layout wgmma reads; each stage's K and V have their
// own "full" mbarrier, completed by cp.async.mbarrier.arrive, and "empty" mbarrier, arrived on by
// the consumer warps once their MMAs have read it). Over a bf16 cache whose blocks tile BN (`tma`),
// whole tiles come by TMA instead, a box per cache block and 64-column panel through the pool's
// tensor map (tensor-maps.ts), which writes the same swizzled layout; the last, partial tile is
// still copied, so that its rows past the end are zeros. Warpgroups 1 and 2 each own 64 query rows:
// S = Q Kᵀ by wgmma with both operands in shared memory, the online softmax in registers, then
// O += P V by wgmma with P straight from the score registers (A from registers) and V read
// MN-major. The score MMA of tile t is issued before the P V MMA of tile t - 1 and the softmax of
// tile t runs while that one is in flight. Causal tiles past a tile's last row are never loaded;
// only tiles that reach a row's own position (or a window's edge, or the padding rows of a short
// last tile) pay for the mask. Register budgets move from the loader to the consumers (setmaxnreg).
//
// Over a quantized cache (KV_DTYPE 1 fp8, 2 int8, 3 int4) the loader reads a tile's codes into
// registers (8 codes a load: 8 bytes, int4's 4), CODE_LOADS in flight a thread, and stores them
// dequantized to bf16 (code · scale, int4's code · scale + minimum, as prefill-attention.cu and the
// CPU twin round them) into the same swizzled layout, then arrives on the stage's "full" mbarrier as
// a plain arrival: the consumers' MMAs are the bf16 path's.
//
// Covers bf16, 8-bit and int4 caches, head dims that are multiples of 16 up to 256 (the launcher sends it
// those from 64), sliding windows, soft-capping (SOFTCAP=1) and sinks (SINKS=1): the scores, masks
// and normalization match prefill-attention.cu, which remains the path for everything else
// (StreamingLLM, tree masks, other head dims, GPUs before Hopper). A head dim other than 64, 128 or
// 256 lies in shared memory padded to the next of them (DP: whole 64-column panels; Phi-3's 96 as
// 128): the loader zero-fills the padding columns, the score MMA reads only the head's own (D / 16
// k-steps), and the P V MMA runs over DP columns, of which only the head's D are stored. Keys come
// from the cache for the whole context (the chunk's own keys included, written by
// ropeAndCacheWrite first), so chunked prefill and prefix hits need nothing special.
//
// VALUE_DIM (default HEAD_DIM) sets a narrower value head, for MLA's expanded prefill
// (mla-expansion.ts): keys of 192 (128 latent-projected + 64 rotary) beside values of 128. Its
// V tiles, the P V MMA and the output then span the value's own padded width (DVP); such keys and
// values are bf16 rows of a contiguous scratch laid out as a pool (blocks of the scratch's own tables).
#include "common.cuh"
#include "wgmma.cuh"
#include "attention-span.cuh"

// nvcc-targets: sm_90a
// nvcc-check: -DHEAD_DIM=128 -DSOFTCAP=0 -DSINKS=0
// nvcc-check: -DHEAD_DIM=64 -DSOFTCAP=0 -DSINKS=0
// nvcc-check: -DHEAD_DIM=256 -DSOFTCAP=0 -DSINKS=0
// nvcc-check: -DHEAD_DIM=128 -DSOFTCAP=1 -DSINKS=1
// nvcc-check: -DHEAD_DIM=256 -DSOFTCAP=1 -DSINKS=0
// nvcc-check: -DHEAD_DIM=64 -DSOFTCAP=0 -DSINKS=1
// nvcc-check: -DHEAD_DIM=128 -DSOFTCAP=0 -DSINKS=0 -DKV_DTYPE=1
// nvcc-check: -DHEAD_DIM=128 -DSOFTCAP=0 -DSINKS=0 -DKV_DTYPE=2
// nvcc-check: -DHEAD_DIM=256 -DSOFTCAP=1 -DSINKS=1 -DKV_DTYPE=2
// nvcc-check: -DHEAD_DIM=64 -DSOFTCAP=0 -DSINKS=0 -DKV_DTYPE=1
// nvcc-check: -DHEAD_DIM=96 -DSOFTCAP=0 -DSINKS=0
// nvcc-check: -DHEAD_DIM=80 -DSOFTCAP=1 -DSINKS=1 -DKV_DTYPE=2
// nvcc-check: -DHEAD_DIM=192 -DSOFTCAP=0 -DSINKS=0
// nvcc-check: -DHEAD_DIM=128 -DSOFTCAP=0 -DSINKS=0 -DKV_DTYPE=3
// nvcc-check: -DHEAD_DIM=96 -DSOFTCAP=1 -DSINKS=1 -DKV_DTYPE=3
// nvcc-check: -DHEAD_DIM=192 -DVALUE_DIM=128 -DSOFTCAP=0 -DSINKS=0
// nvcc-check: -DHEAD_DIM=96 -DVALUE_DIM=64 -DSOFTCAP=0 -DSINKS=0

#if !defined(HEAD_DIM) || !defined(SOFTCAP) || !defined(SINKS)
#error "compile with -DHEAD_DIM=<a multiple of 16 up to 256> -DSOFTCAP=<0|1> -DSINKS=<0|1> [-DKV_DTYPE=<0 bf16|1 fp8|2 int8|3 int4>] [-DVALUE_DIM=<a narrower value head>]"
#endif
#ifndef KV_DTYPE
#define KV_DTYPE 0
#endif
#ifndef VALUE_DIM
#define VALUE_DIM HEAD_DIM
#endif

namespace {
constexpr int D = HEAD_DIM;
constexpr int DP = D <= 64 ? 64 : D <= 128 ? 128 : 256;  // a row's width in shared memory (padded)
constexpr int DV = VALUE_DIM;
constexpr int DVP = DV <= 64 ? 64 : DV <= 128 ? 128 : 256;  // a value row's
constexpr int BM = 128;                       // query rows per CTA, 64 per consumer warpgroup
constexpr int BN = DP <= 128 ? 128 : 64;      // keys per tile (fewer for 256 to bound registers)
constexpr int STAGES = 2;
constexpr int CHUNKS = DP / 8;                // 16-byte chunks per shared-memory row
constexpr int HEAD_CHUNKS = D / 8;            // those the head has; the rest are zero-filled
constexpr int Q_BYTES = BM * DP * 2;
constexpr int TILE_BYTES = BN * DP * 2;       // one K tile
constexpr int V_CHUNKS = DVP / 8;
constexpr int V_TILE_BYTES = BN * DVP * 2;    // one V tile
constexpr int LOADERS = 128;                  // warpgroup 0
constexpr int CONSUMER_WARPS = 8;             // warpgroups 1 and 2
constexpr int THREADS = LOADERS + 32 * CONSUMER_WARPS;
constexpr int CODE_LOADS = 4;                 // an 8-bit cache's 8-byte code loads in flight a loader thread
static_assert(BN * CHUNKS % (LOADERS * CODE_LOADS) == 0, "a tile's code chunks split evenly over the loads in flight");
static_assert(D % 16 == 0 && D >= 16 && D <= 256, "head dim must be a multiple of 16 up to 256");
static_assert(DV % 16 == 0 && DVP <= DP, "a value head is a multiple of 16, no wider than the key's padded width");
static_assert(DV == D || KV_DTYPE == 0, "a narrower value head is read from bf16 rows only");
}  // namespace

// Offset of 16-byte chunk `ch` of row `r` in a tile of `Rows` rows: the row is cut into 128-byte
// (64-element) panels, panel p holding that slice of every row, each panel swizzled as wgmma's
// 128-byte layout (see wgmma.cuh).
template <int Rows>
__device__ __forceinline__ unsigned int tile_offset(int r, int ch) {
  return (unsigned int)((ch >> 3) * Rows * 128) + swizzle128(r, ch & 7);
}

// A bf16 K or V tile's rows by cp.async, rows W wide (WP padded) in the pool; the stage's barrier
// completes once they land. The loader thread `tid` copies the same 16-byte column of every row it
// takes, ROW_STEP rows apart: the source moves by the row's slot alone, and the destination by
// ROW_STEP rows (with whole 8-row swizzle atoms a constant; the copies are most of the loader's
// instructions, so nothing else is left in them). lane_slot: lane_kv_slot's for this width.
template <int W, int WP>
__device__ __forceinline__ void load_bf16_rows(unsigned char* tile, const unsigned char* pool, int tid, int kvh, int num_kv_heads, int lane_slot, unsigned int full) {
  constexpr int W_CHUNKS = WP / 8;
  using TileRows = KvTileRows<BN, W_CHUNKS, LOADERS>;
  constexpr int ROW_STEP = LOADERS / W_CHUNKS;
  const int ch = tid % W_CHUNKS, row0 = tid / W_CHUNKS;
  const int bytes = ch < W / 8 ? 16 : 0;  // a padding column's thread only zero-fills
  const long long slot_elems = (long long)num_kv_heads * W;
  const bf16* src = reinterpret_cast<const bf16*>(pool) + kvh * W + (bytes > 0 ? ch : 0) * 8;
#pragma unroll 8
  for (int i = 0; i < TileRows::ROUNDS; i++) {
    const int slot = round_kv_slot<TileRows>(lane_slot, i);
    const unsigned int at = ROW_STEP % 8 == 0 ? tile_offset<BN>(row0, ch) + i * ROW_STEP * 128 : tile_offset<BN>(row0 + i * ROW_STEP, ch);
    cp_async16(tile + at, src + (slot >= 0 ? slot : 0) * slot_elems, slot >= 0 ? bytes : 0);
  }
  mbarrier_arrive_on_copies(full);
}

// grid (numHeads, numTiles), block 384, dynamic shared memory: prefillWgmmaSharedBytes (1024 of
// alignment slack, the Q tile, two stages of K and V tiles, the mbarriers). Query rows are q_row
// elements apart in qkv (head h's D at h · D), output rows num_heads · DV in out. tiles [numTiles, 2] =
// (sequence, first query row) of 128-row tiles. Query rows of a tile have increasing positions
// (true of any chunk). Scores in the log2 domain as in prefill-attention.cu: q_scale · q · k, or
// with SOFTCAP softcap_log2 · tanh(q_scale · q · k); sinks [numHeads] bf16 read only with SINKS.
// k_map / v_map: the pools' tensor maps, read only with `tma` (else zeros).
extern "C" __global__ void __launch_bounds__(THREADS, 1) prefill_attention_wgmma_kernel(
    bf16* __restrict__ out, const bf16* __restrict__ qkv, int q_row, const unsigned char* __restrict__ k_pool, const unsigned char* __restrict__ v_pool,
    const int* __restrict__ tiles, const int* __restrict__ query_start, const int* __restrict__ positions,
    const int* __restrict__ seq_lens, const int* __restrict__ block_tables, int max_blocks_per_seq, int block_size,
    int num_heads, int num_kv_heads, float q_scale, float softcap_log2, const bf16* __restrict__ sinks, int window,
    const float* __restrict__ k_scales, const float* __restrict__ v_scales, float k_scale, float v_scale, int chunk,
    float temp_floor, float temp_scale, int temp_offset, int tma, const __grid_constant__ TensorMap k_map,
    const __grid_constant__ TensorMap v_map) {
  PDL_PROLOGUE();
  extern __shared__ __align__(16) unsigned char smem_raw[];
  // Swizzle atoms must be 1024-aligned (the descriptors' base offset stays 0).
  const unsigned int raw = smem_addr(smem_raw);
  const unsigned int base = (raw + 1023) & ~1023u;
  unsigned char* smem = smem_raw + (base - raw);
  const unsigned int s_q = base, s_k = base + Q_BYTES, s_v = s_k + STAGES * TILE_BYTES;
  const unsigned int bars = s_v + STAGES * V_TILE_BYTES;
  const unsigned int q_full = bars;
  auto k_full = [&](int st) { return bars + 8 * (1 + st); };
  auto v_full = [&](int st) { return bars + 8 * (1 + STAGES + st); };
  auto k_empty = [&](int st) { return bars + 8 * (1 + 2 * STAGES + st); };
  auto v_empty = [&](int st) { return bars + 8 * (1 + 3 * STAGES + st); };

  const int head = blockIdx.x;
  const int seq = tiles[2 * blockIdx.y], q0 = tiles[2 * blockIdx.y + 1];
  const int qstart = query_start[seq];
  const int rows = min(BM, query_start[seq + 1] - qstart - q0);
  const int first_pos = positions[qstart + q0];
  const int k_end = min(seq_lens[seq], positions[qstart + q0 + rows - 1] + 1);
  const int k_begin = (window > 0 ? max(0, first_pos - window + 1) : 0) / BN * BN;
  const int num_tiles = max(0, (k_end - k_begin + BN - 1) / BN);

  if (threadIdx.x == 0) {
    mbarrier_init(q_full, LOADERS);
    for (int st = 0; st < STAGES; st++) {
      mbarrier_init(k_full(st), LOADERS);
      mbarrier_init(v_full(st), LOADERS);
      mbarrier_init(k_empty(st), CONSUMER_WARPS);
      mbarrier_init(v_empty(st), CONSUMER_WARPS);
    }
    mbarrier_init_fence();
  }
  __syncthreads();

  if (threadIdx.x < LOADERS) {
    // Loader: 16-byte chunks, a warp covering whole rows; rows past the tile's end are zero-filled
    // (so a partial last tile holds no stale NaN that 0 · NaN would carry into O).
    registers_release<40>();
    const int tid = threadIdx.x;
    const int kvh = head / (num_heads / num_kv_heads);
    for (int c = tid; c < BM * CHUNKS; c += LOADERS) {
      const int r = c / CHUNKS, ch = c % CHUNKS;
      const bool valid = r < rows && ch < HEAD_CHUNKS;
      const long long src = valid ? (long long)(qstart + q0 + r) * q_row + head * D + ch * 8 : 0;
      cp_async16(smem + tile_offset<BM>(r, ch), qkv + src, valid ? 16 : 0);
    }
    mbarrier_arrive_on_copies(q_full);
    const int* table = block_tables + (long long)seq * max_blocks_per_seq;
    // Chunk c = tid + i · LOADERS of a K or V tile in round i; each row's slot is looked up once a
    // tile, for K and V alike (a narrower V apart), by one lane of the warp (kv-tile-rows.cuh).
    using Rows = KvTileRows<BN, CHUNKS, LOADERS>;
    using ValueRows = KvTileRows<BN, V_CHUNKS, LOADERS>;
    static_assert(Rows::BY_LANE && ValueRows::BY_LANE, "a loader warp's lanes hold the slots of the rows it copies");
#if KV_DTYPE == 0
    auto load_tile = [&](const unsigned char* pool, const float*, float, unsigned int dst, int lane_slot, unsigned int full) {
      load_bf16_rows<D, DP>(smem + (dst - base), pool, tid, kvh, num_kv_heads, lane_slot, full);
    };
    auto load_value_tile = [&](const unsigned char* pool, const float*, float, unsigned int dst, int lane_slot, unsigned int full) {
      load_bf16_rows<DV, DVP>(smem + (dst - base), pool, tid, kvh, num_kv_heads, lane_slot, full);
    };
    // A whole tile by TMA: lane j of warp 0 loads the tile's cache block j (its first slot in
    // block_slot), a box per 64-column panel, into rows j · block_size onward (whole swizzle atoms:
    // the block size is a multiple of 8); lane 0 has the barrier expect the tile's bytes before any
    // box is issued, and every loader thread arrives once, as with copies.
    auto tma_tile = [&](const TensorMap* map, unsigned int dst, int block_slot, unsigned int full) {
      if (tid < 32) {
        if (tid == 0) mbarrier_arrive_expect_tx(full, TILE_BYTES);
        __syncwarp();
        if (tid < BN / block_size) {
#pragma unroll
          for (int p = 0; p < D / 64; p++) tma_load_3d(dst + p * (BN * 128) + tid * block_size * 128, map, p * 64, kvh, block_slot, full);
        }
        if (tid > 0) mbarrier_arrive(full);
      } else {
        mbarrier_arrive(full);
      }
    };
#else
    // A tile's codes through registers, CODE_LOADS chunks in flight, stored as bf16 rows; the
    // arrival releases the stores to the consumers (who fence before their MMAs read them).
    auto load_tile = [&](const unsigned char* pool, const float* row_scales, float scale, unsigned int dst, int lane_slot, unsigned int full) {
      for (int i0 = 0; i0 < Rows::ROUNDS; i0 += CODE_LOADS) {
        uint2 codes[CODE_LOADS];  // a chunk's 8 codes: 8 bytes, or int4's 4 in .x
        float scales[CODE_LOADS], mins[CODE_LOADS];
#pragma unroll
        for (int i = 0; i < CODE_LOADS; i++) {
          const int c = tid + (i0 + i) * LOADERS, ch = c % CHUNKS;
          const int slot = round_kv_slot<Rows>(lane_slot, i0 + i);
          codes[i] = make_uint2(0, 0);
          scales[i] = 0.f;
          mins[i] = 0.f;  // a padding row or column: code 0 at scale and minimum 0 is 0
          if (slot >= 0 && ch < HEAD_CHUNKS) {
            const long long slot_head = (long long)slot * num_kv_heads + kvh;
            if (KV_DTYPE == 3) {
              codes[i].x = *reinterpret_cast<const unsigned int*>(pool + slot_head * (D / 2) + ch * 4);
              scales[i] = row_scales[2 * slot_head];
              mins[i] = row_scales[2 * slot_head + 1];
            } else {
              codes[i] = *reinterpret_cast<const uint2*>(pool + slot_head * D + ch * 8);
              scales[i] = KV_DTYPE == 2 ? row_scales[slot_head] : scale;
            }
          }
        }
#pragma unroll
        for (int i = 0; i < CODE_LOADS; i++) {
          const int c = tid + (i0 + i) * LOADERS;
          *reinterpret_cast<uint4*>(smem + (dst - base) + tile_offset<BN>(c / CHUNKS, c % CHUNKS)) =
              KV_DTYPE == 3 ? dequantize_int4x8(codes[i].x, scales[i], mins[i]) : dequantize8<KV_DTYPE>(codes[i], scales[i]);
        }
      }
      mbarrier_arrive(full);
    };
    const auto& load_value_tile = load_tile;  // DV == D
#endif
    for (int t = 0; t < num_tiles; t++) {
      const int st = t % STAGES;
      const unsigned int reuse_parity = (t / STAGES - 1) & 1;  // the phase that frees tile t - STAGES
      const int k0 = k_begin + t * BN;
      // With `tma` (a bf16 cache whose blocks tile BN), whole tiles come by TMA; the last, partial
      // one by copies, which zero the rows past the end where a block would bring stale ones.
      const bool by_tma = KV_DTYPE == 0 && D == DP && DV == D && tma && k0 + BN <= k_end;
      // Its table read overlaps the wait: a block's first slot for TMA, else this lane's row's slot.
      const int lane_slot = by_tma ? (tid < BN / block_size ? table[k0 / block_size + tid] * block_size : 0) : lane_kv_slot<Rows>(table, k0, k_end, block_size);
      // A narrower value row splits over the lanes differently: its rows' slots are looked up apart.
      const int value_slot = V_CHUNKS == CHUNKS || by_tma ? lane_slot : lane_kv_slot<ValueRows>(table, k0, k_end, block_size);
      if (t >= STAGES) mbarrier_wait(k_empty(st), reuse_parity);
#if KV_DTYPE == 0
      if (by_tma) {
        tma_tile(&k_map, s_k + st * TILE_BYTES, lane_slot, k_full(st));
        if (t >= STAGES) mbarrier_wait(v_empty(st), reuse_parity);
        tma_tile(&v_map, s_v + st * V_TILE_BYTES, lane_slot, v_full(st));
        continue;
      }
#endif
      load_tile(k_pool, k_scales, k_scale, s_k + st * TILE_BYTES, lane_slot, k_full(st));
      if (t >= STAGES) mbarrier_wait(v_empty(st), reuse_parity);
      load_value_tile(v_pool, v_scales, v_scale, s_v + st * V_TILE_BYTES, value_slot, v_full(st));
    }
    // Leave no copy in flight behind an exiting thread.
    asm volatile("cp.async.wait_all;\n" ::: "memory");
    return;
  }

  registers_claim<232>();
  const int cw = threadIdx.x / 128 - 1;  // consumer warpgroup: query rows 64 cw .. 64 cw + 63
  const int warp = (threadIdx.x / 32) % 4, lane = threadIdx.x & 31;
  const int g = lane >> 2, t4 = lane & 3;
  const int wrow = cw * 64 + warp * 16;  // the warp's first row in the tile
  const int r0 = wrow + g, r1 = r0 + 8;  // this thread's two rows (accumulator layout)
  const int qp0 = r0 < rows ? positions[qstart + q0 + r0] : -1;  // -1: padding row, every key masked
  const int qp1 = r1 < rows ? positions[qstart + q0 + r1] : -1;
  const int lo0 = max(window > 0 ? qp0 - window + 1 : 0, chunk_first_key(qp0, chunk));
  const int lo1 = max(window > 0 ? qp1 - window + 1 : 0, chunk_first_key(qp1, chunk));
  const float q_scale0 = q_scale * query_temperature(qp0, temp_floor, temp_scale, temp_offset);
  const float q_scale1 = q_scale * query_temperature(qp1, temp_floor, temp_scale, temp_offset);
  // Keys below this are seen by every row of the warp: tiles that end there skip the mask.
  const int unmasked_end = window == 0 && chunk == 0 && wrow + 15 < rows ? positions[qstart + q0 + wrow] + 1 : 0;

  float o[DVP / 2];
#pragma unroll
  for (int i = 0; i < DVP / 2; i++) o[i] = 0.f;
  float s[BN / 2];
  unsigned int p[BN / 16][4];  // P as the P V MMA reads it
  float m0 = NEG_INF, m1 = NEG_INF, l0 = 0.f, l1 = 0.f;  // l: this thread's share of the row sums

  // Operand descriptors. Q (A) and K (B) are K-major: 8-row groups 1024 bytes apart, a k-step of
  // 16 elements is 32 bytes along the 128-byte row, four per panel. V (B) is MN-major: a k-step
  // is 16 keys (2048 bytes), its N = DVP columns span the panels (BN · 128 bytes apart).
  // Each built once and moved by constant offsets (and the stage's) before every MMA.
  const u64 q_desc0 = wgmma_desc(s_q + cw * 64 * 128, 16, 1024), k_desc0 = wgmma_desc(s_k, 16, 1024), v_desc0 = wgmma_desc(s_v, BN * 128, 1024);
  auto q_desc = [&](int kk) { return wgmma_desc_advance(q_desc0, (kk >> 2) * (BM * 128) + (kk & 3) * 32); };
  auto k_desc = [&](int st, int kk) { return wgmma_desc_advance(k_desc0, st * TILE_BYTES + (kk >> 2) * (BN * 128) + (kk & 3) * 32); };
  auto v_desc = [&](int st, int kk) { return wgmma_desc_advance(v_desc0, st * V_TILE_BYTES + kk * 16 * 128); };

  auto issue_scores = [&](int st) {
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) wgmma_ss<BN>(s, q_desc(kk), k_desc(st, kk), kk > 0);
    wgmma_commit();
  };
  auto issue_pv = [&](int st) {
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < BN / 16; kk++) wgmma_rs_mn<DVP>(o, p[kk], v_desc(st, kk), 1);
    wgmma_commit();
  };
  // Scores of the tile at k0 (in s) into probabilities (in place), the running max and sums;
  // alpha: the factors that rescale what O holds so far to the new max.
  auto softmax = [&](int k0, float& alpha0, float& alpha1) {
    if (k0 + BN > unmasked_end) {
#pragma unroll
      for (int n = 0; n < BN / 8; n++) {
#pragma unroll
        for (int e = 0; e < 2; e++) {
          const int key = k0 + n * 8 + t4 * 2 + e;
          const bool seen0 = key <= qp0 && key >= lo0, seen1 = key <= qp1 && key >= lo1;
#if SOFTCAP
          s[4 * n + e] = seen0 ? softcap_log2 * fast_tanh(s[4 * n + e] * q_scale0) : NEG_INF;
          s[4 * n + 2 + e] = seen1 ? softcap_log2 * fast_tanh(s[4 * n + 2 + e] * q_scale1) : NEG_INF;
#else
          if (!seen0) s[4 * n + e] = NEG_INF;
          if (!seen1) s[4 * n + 2 + e] = NEG_INF;
#endif
        }
      }
    }
#if SOFTCAP
    else {
#pragma unroll
      for (int i = 0; i < BN / 2; i++) s[i] = softcap_log2 * fast_tanh(s[i] * ((i & 2) ? q_scale1 : q_scale0));
    }
    constexpr float mul0 = 1.f, mul1 = 1.f;
#else
    // Raw scores stay unscaled: the scale rides in the exponent's FMA (q_scale > 0 keeps the max).
    const float mul0 = q_scale0, mul1 = q_scale1;
#endif
    float mx0 = NEG_INF, mx1 = NEG_INF;
#pragma unroll
    for (int n = 0; n < BN / 8; n++) {
      mx0 = fmaxf(mx0, fmaxf(s[4 * n], s[4 * n + 1]));
      mx1 = fmaxf(mx1, fmaxf(s[4 * n + 2], s[4 * n + 3]));
    }
    mx0 = fmaxf(mx0, __shfl_xor_sync(FULL_MASK, mx0, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(FULL_MASK, mx0, 2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(FULL_MASK, mx1, 1));
    mx1 = fmaxf(mx1, __shfl_xor_sync(FULL_MASK, mx1, 2));
    const float mn0 = fmaxf(m0, mx0 * mul0), mn1 = fmaxf(m1, mx1 * mul1);
    // A row with no visible key yet keeps max -inf; exponentiate against 0 so nothing becomes NaN.
    const float ref0 = mn0 == NEG_INF ? 0.f : mn0, ref1 = mn1 == NEG_INF ? 0.f : mn1;
    alpha0 = fast_exp2(m0 - ref0);
    alpha1 = fast_exp2(m1 - ref1);
    m0 = mn0;
    m1 = mn1;
    float sum0 = 0.f, sum1 = 0.f;
#pragma unroll
    for (int n = 0; n < BN / 8; n++) {
      s[4 * n] = fast_exp2(fmaf(s[4 * n], mul0, -ref0));
      s[4 * n + 1] = fast_exp2(fmaf(s[4 * n + 1], mul0, -ref0));
      s[4 * n + 2] = fast_exp2(fmaf(s[4 * n + 2], mul1, -ref1));
      s[4 * n + 3] = fast_exp2(fmaf(s[4 * n + 3], mul1, -ref1));
      sum0 += s[4 * n] + s[4 * n + 1];
      sum1 += s[4 * n + 2] + s[4 * n + 3];
    }
    l0 = l0 * alpha0 + sum0;
    l1 = l1 * alpha1 + sum1;
  };
  // The probabilities (in s) as P's A fragments: two adjacent 8-key groups of accumulators form one
  // 16-key fragment (rows g, g + 8). Runs once the previous P V has finished reading p.
  auto take_p = [&]() {
#pragma unroll
    for (int kk = 0; kk < BN / 16; kk++) {
      p[kk][0] = pack_bf16x2(s[8 * kk], s[8 * kk + 1]);
      p[kk][1] = pack_bf16x2(s[8 * kk + 2], s[8 * kk + 3]);
      p[kk][2] = pack_bf16x2(s[8 * kk + 4], s[8 * kk + 5]);
      p[kk][3] = pack_bf16x2(s[8 * kk + 6], s[8 * kk + 7]);
    }
  };
  // A warp's arrival frees its share of a stage; lane 0 arrives once the whole warp has waited.
  auto release = [&](unsigned int bar) {
    __syncwarp();
    if (lane == 0) mbarrier_arrive(bar);
  };

  mbarrier_wait(q_full, 0);
  if (num_tiles > 0) {
    float alpha0, alpha1;
    mbarrier_wait(k_full(0), 0);
    fence_async_shared();
    issue_scores(0);
    wgmma_wait<0>();
    pin_registers(s);
    release(k_empty(0));
    softmax(k_begin, alpha0, alpha1);  // O is still zero: nothing to rescale
    take_p();
    for (int t = 1; t < num_tiles; t++) {
      const int st = t % STAGES, prev = (t - 1) % STAGES;
      mbarrier_wait(k_full(st), (t / STAGES) & 1);
      fence_async_shared();
      issue_scores(st);
      mbarrier_wait(v_full(prev), ((t - 1) / STAGES) & 1);
      fence_async_shared();
      issue_pv(prev);
      wgmma_wait<1>();  // the scores are done; P V of tile t - 1 may still run
      pin_registers(s);
      release(k_empty(st));
      softmax(k_begin + t * BN, alpha0, alpha1);
      wgmma_wait<0>();
      pin_registers(o);
      pin_registers(p);
      release(v_empty(prev));
#pragma unroll
      for (int n = 0; n < DV / 8; n++) {  // the padding columns stay zero
        o[4 * n] *= alpha0;
        o[4 * n + 1] *= alpha0;
        o[4 * n + 2] *= alpha1;
        o[4 * n + 3] *= alpha1;
      }
      take_p();
    }
    const int last = (num_tiles - 1) % STAGES;
    mbarrier_wait(v_full(last), ((num_tiles - 1) / STAGES) & 1);
    fence_async_shared();
    issue_pv(last);
    wgmma_wait<0>();
    pin_registers(o);
  }

  l0 += __shfl_xor_sync(FULL_MASK, l0, 1);
  l0 += __shfl_xor_sync(FULL_MASK, l0, 2);
  l1 += __shfl_xor_sync(FULL_MASK, l1, 1);
  l1 += __shfl_xor_sync(FULL_MASK, l1, 2);
#if SINKS
  const float sink = bf16_to_f32(sinks[head]) * LOG2E;
  const float inv0 = sink_normalizer(m0, l0, sink), inv1 = sink_normalizer(m1, l1, sink);
#else
  const float inv0 = l0 > 0.f ? 1.f / l0 : 0.f, inv1 = l1 > 0.f ? 1.f / l1 : 0.f;
#endif
  const long long out_row = (long long)num_heads * DV;
  bf16* out0 = out + (long long)(qstart + q0 + r0) * out_row + head * DV;
  bf16* out1 = out0 + 8 * out_row;
#pragma unroll
  for (int n = 0; n < DV / 8; n++) {
    const int col = n * 8 + t4 * 2;
    if (r0 < rows) *reinterpret_cast<unsigned int*>(out0 + col) = pack_bf16x2(o[4 * n] * inv0, o[4 * n + 1] * inv0);
    if (r1 < rows) *reinterpret_cast<unsigned int*>(out1 + col) = pack_bf16x2(o[4 * n + 2] * inv1, o[4 * n + 3] * inv1);
  }
}
