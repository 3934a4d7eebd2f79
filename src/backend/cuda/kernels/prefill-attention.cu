// Prefill attention, FlashAttention-2 style on bf16 tensor cores (mma.sync m16n8k16): a CTA takes
// 64 query tokens of one sequence for one query head (each of its 4 warps 16 rows), streams the
// sequence's keys and values from the paged cache in tiles (double-buffered with cp.async), and
// keeps a running max and sum per row (online softmax) so scores never reach global memory.
// Keys come from the cache for the whole context, the current chunk included (ropeAndCacheWrite
// ran first), so chunked prefill and prefix-cache hits need nothing special.
//
// Head dims over 256 (Gemma 4's global layers, 512) split the head across a pair of warps
// (DSPLIT = 2): a warp's output accumulators for 16 rows of the whole head would need 256 registers
// a thread. Each warp of a pair holds the same 16 rows and one half of the head: it scores Q Kᵀ over
// its half, the pair swaps those partial scores through shared memory and adds them (float addition
// commutes, so both warps hold bitwise equal scores, maxima and probabilities), and each accumulates
// P V for its half. A CTA then takes 32 query rows, half of a planned 64-row tile (the grid's y
// counts both halves), with 16-key tiles: about 100 KiB of shared memory, two CTAs per Hopper SM.
//
// Specialized by HEAD_DIM (a multiple of 8 up to 512; dims that are not a multiple of the mma's
// k-step, 16 per warp, are zero-padded in shared memory), and by the options a model may turn on, so
// that plain attention pays nothing for them: SOFTCAP=1 caps each score at cap · tanh(score / cap)
// (Gemma 2); SINKS=1 adds each head's learned sink logit to its softmax's denominator (gpt-oss);
// STREAMING=1 is StreamingLLM: queries arrive unrotated and are rotated as the Q tile is loaded,
// first at each row's position inside the cache (min(row, sink_row_cap)) for a pass over the sink
// keys behind its window, then at its rotary row for the window's keys. TREE=1 is speculative tree
// verification: a row's own K/V sit at its cache index (the chunk's first cache index plus its row),
// which bounds the keys it sees, and of its chunk's keys it sees those its tree_mask row sets (its
// ancestors and itself); its position (the root's plus its depth) places its window.
#include "common.cuh"
#include "mma.cuh"
#include "attention-span.cuh"

// nvcc-check: -DHEAD_DIM=64 -DSOFTCAP=0 -DSINKS=0 -DSTREAMING=0 -DKV_DTYPE=0
// nvcc-check: -DHEAD_DIM=72 -DSOFTCAP=0 -DSINKS=0 -DSTREAMING=0 -DKV_DTYPE=0
// nvcc-check: -DHEAD_DIM=96 -DSOFTCAP=0 -DSINKS=0 -DSTREAMING=0 -DKV_DTYPE=0
// nvcc-check: -DHEAD_DIM=128 -DSOFTCAP=0 -DSINKS=0 -DSTREAMING=0 -DKV_DTYPE=0
// nvcc-check: -DHEAD_DIM=256 -DSOFTCAP=0 -DSINKS=0 -DSTREAMING=0 -DKV_DTYPE=0
// nvcc-check: -DHEAD_DIM=256 -DSOFTCAP=1 -DSINKS=0 -DSTREAMING=0 -DKV_DTYPE=0
// nvcc-check: -DHEAD_DIM=64 -DSOFTCAP=0 -DSINKS=1 -DSTREAMING=0 -DKV_DTYPE=0
// nvcc-check: -DHEAD_DIM=128 -DSOFTCAP=1 -DSINKS=1 -DSTREAMING=0 -DKV_DTYPE=0
// nvcc-check: -DHEAD_DIM=64 -DSOFTCAP=0 -DSINKS=0 -DSTREAMING=1 -DKV_DTYPE=0
// nvcc-check: -DHEAD_DIM=256 -DSOFTCAP=1 -DSINKS=1 -DSTREAMING=1 -DKV_DTYPE=0
// nvcc-check: -DHEAD_DIM=128 -DSOFTCAP=0 -DSINKS=0 -DSTREAMING=0 -DKV_DTYPE=1
// nvcc-check: -DHEAD_DIM=72 -DSOFTCAP=0 -DSINKS=0 -DSTREAMING=0 -DKV_DTYPE=2
// nvcc-check: -DHEAD_DIM=256 -DSOFTCAP=1 -DSINKS=1 -DSTREAMING=1 -DKV_DTYPE=1
// nvcc-check: -DHEAD_DIM=128 -DSOFTCAP=0 -DSINKS=0 -DSTREAMING=0 -DKV_DTYPE=0 -DTREE=1
// nvcc-check: -DHEAD_DIM=64 -DSOFTCAP=1 -DSINKS=1 -DSTREAMING=0 -DKV_DTYPE=0 -DTREE=1
// nvcc-check: -DHEAD_DIM=128 -DSOFTCAP=0 -DSINKS=0 -DSTREAMING=0 -DKV_DTYPE=2 -DTREE=1
// nvcc-check: -DHEAD_DIM=64 -DSOFTCAP=0 -DSINKS=0 -DSTREAMING=0 -DKV_DTYPE=1 -DTREE=1
// nvcc-check: -DHEAD_DIM=512 -DSOFTCAP=0 -DSINKS=0 -DSTREAMING=0 -DKV_DTYPE=0
// nvcc-check: -DHEAD_DIM=512 -DSOFTCAP=1 -DSINKS=1 -DSTREAMING=1 -DKV_DTYPE=2
// nvcc-check: -DHEAD_DIM=512 -DSOFTCAP=1 -DSINKS=0 -DSTREAMING=0 -DKV_DTYPE=1 -DTREE=1
// nvcc-check: -DHEAD_DIM=264 -DSOFTCAP=0 -DSINKS=0 -DSTREAMING=0 -DKV_DTYPE=0
// nvcc-check: -DHEAD_DIM=128 -DSOFTCAP=0 -DSINKS=0 -DSTREAMING=0 -DKV_DTYPE=3
// nvcc-check: -DHEAD_DIM=72 -DSOFTCAP=1 -DSINKS=1 -DSTREAMING=1 -DKV_DTYPE=3
// nvcc-check: -DHEAD_DIM=64 -DSOFTCAP=0 -DSINKS=0 -DSTREAMING=0 -DKV_DTYPE=3 -DTREE=1
// nvcc-check: -DHEAD_DIM=512 -DSOFTCAP=0 -DSINKS=0 -DSTREAMING=0 -DKV_DTYPE=3

#if !defined(HEAD_DIM) || !defined(SOFTCAP) || !defined(SINKS) || !defined(STREAMING) || !defined(KV_DTYPE)
#error "compile with -DHEAD_DIM=<head dim> -DSOFTCAP=<0|1> -DSINKS=<0|1> -DSTREAMING=<0|1> -DKV_DTYPE=<0 bf16|1 fp8|2 int8|3 int4> [-DTREE=<0|1>]"
#endif
#ifndef TREE
#define TREE 0
#endif
#if TREE && STREAMING
#error "StreamingLLM takes no tree mask"
#endif

namespace {
constexpr int D = HEAD_DIM;
constexpr int DSPLIT = D <= 256 ? 1 : 2;          // warps that share a row group, each one slice of the head
constexpr int DP = (D + 16 * DSPLIT - 1) / (16 * DSPLIT) * (16 * DSPLIT);  // padded to the mma k-step per slice
constexpr int DS = DP / DSPLIT;                   // a warp's slice of the (padded) head
constexpr int DCH = D / 8;                        // 16-byte chunks of real data per row
constexpr int PLAN_ROWS = 64;                     // query rows of a planned tile (attention-plan.ts)
constexpr int BM = PLAN_ROWS / DSPLIT;            // query rows per CTA: 16 per row group of warps
constexpr int BN = D <= 128 ? 64 : D <= 256 ? 32 : 16;  // keys per tile (smaller for large heads to bound registers and smem)
constexpr int NT = 128;
constexpr int ROW = DP + 8;                       // smem row in bf16; the 16-byte pad keeps ldmatrix conflict-free
constexpr int SWAP = BN / 8 * 4;                  // partial scores a thread swaps with its pair (DSPLIT 2)
#if KV_DTYPE
constexpr int RS = KV_DTYPE == 3 ? 2 : 1;         // floats a cached row keeps beside its codes: int8's scale, int4's (scale, minimum)
#endif
static_assert(D % 8 == 0 && D <= 512, "head dim must be a multiple of 8, at most 512");
static_assert(DS % 16 == 0 && DS <= 256, "a warp's slice must be whole k-steps of at most 256 dims");
}  // namespace

// grid (numHeads, numTiles * DSPLIT), block NT. tiles [numTiles, 2] = (sequence, first query row in it),
// each CTA taking its BM-row part of a tile. Dynamic shared memory: (BM + 4 * BN) * ROW * 2 bytes (Q
// tile, K and V tiles in two stages), with DSPLIT 2 the swapped scores, NT * SWAP * 4 bytes, then
// int8's row scales, 2 * 2 * BN * 4 bytes.
// Query rows of a tile are assumed to have increasing positions (true of any chunk). Scores live
// in the log2 domain: q_scale · q · k, or with SOFTCAP softcap_log2 · tanh(q_scale · q · k) (q_scale
// = scale / cap, softcap_log2 = cap · log2(e)). sinks [numHeads] bf16 is read only with SINKS; cos/sin
// (the layer's f32 rotary table), rotary_rows, rotary_dim, stream_sinks and sink_row_cap only with STREAMING;
// k_scales/v_scales (f32 [slots, num_kv_heads], int4 [slots, num_kv_heads, 2]) only with KV_DTYPE 2 and 3, k_scale/v_scale
// only with KV_DTYPE 1;
// tree_mask [numTokens, tree_words] only with TREE (bit j of a row: the chunk's j-th key is seen; keys
// past 32 * tree_words are seen). With TREE the tile's rows need not have increasing positions. chunk limits
// each row to its attention chunk and temp_floor / temp_scale / temp_offset scale its scores by its temperature
// (attention-span.cuh; 0: none).
extern "C" __global__ void __launch_bounds__(NT) prefill_attention_kernel(
    bf16* __restrict__ out, const bf16* __restrict__ qkv, const unsigned char* __restrict__ k_pool,
    const unsigned char* __restrict__ v_pool, const int* __restrict__ tiles, const int* __restrict__ query_start,
    const int* __restrict__ positions, const int* __restrict__ seq_lens, const int* __restrict__ block_tables,
    int max_blocks_per_seq, int block_size, int num_heads, int num_kv_heads, float q_scale, float softcap_log2,
    const bf16* __restrict__ sinks, int window, const float* __restrict__ cos_table, const float* __restrict__ sin_table,
    const int* __restrict__ rotary_rows, int rotary_dim, int stream_sinks, int sink_row_cap, const float* __restrict__ k_scales,
    const float* __restrict__ v_scales, float k_scale, float v_scale, const int* __restrict__ tree_mask, int tree_words, int chunk,
    float temp_floor, float temp_scale, int temp_offset) {
  PDL_PROLOGUE();
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* s_q = reinterpret_cast<bf16*>(smem);  // [BM][ROW]
  bf16* s_k = s_q + BM * ROW;                 // [2][BN][ROW]
  bf16* s_v = s_k + 2 * BN * ROW;             // [2][BN][ROW]
  float* s_swap = reinterpret_cast<float*>(s_v + 2 * BN * ROW);  // [NT / 32 warps][SWAP][32 lanes], DSPLIT 2 only
#if KV_DTYPE
  float* s_scales = s_swap + (DSPLIT == 2 ? NT * SWAP : 0);        // [2 stages][K, V][BN][RS]: int8's row scales, int4's pairs
#endif

  const int head = blockIdx.x;
  const unsigned int plan_tile = blockIdx.y / DSPLIT;
  const int seq = tiles[2 * plan_tile], q0 = tiles[2 * plan_tile + 1] + (blockIdx.y % DSPLIT) * BM;
  const int qstart = query_start[seq];
  const int rows = min(BM, query_start[seq + 1] - qstart - q0);
  if (DSPLIT > 1 && rows <= 0) return;  // the second half of a short tile
  const int kvh = head / (num_heads / num_kv_heads);
  const int row_width = (num_heads + 2 * num_kv_heads) * D;
#if TREE
  // Every position of a tree chunk is at least its root's, the chunk's first cache index.
  const int chunk_start = seq_lens[seq] - (query_start[seq + 1] - qstart);
  const int first_pos = chunk_start;
  const int k_end = min(seq_lens[seq], chunk_start + q0 + rows);
#else
  const int first_pos = positions[qstart + q0];
  const int k_end = min(seq_lens[seq], positions[qstart + q0 + rows - 1] + 1);
#endif
  const int k_begin = (window > 0 ? max(0, first_pos - window + 1) : 0) / BN * BN;
  const int* table = block_tables + (long long)seq * max_blocks_per_seq;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  // The warp's 16 rows of the tile and its slice of the head.
  const int row_group = warp / DSPLIT, slice = (warp % DSPLIT) * DS;

  if (DP != D) {  // zero the pad columns of every row (Q, then both K and V stages) once
    for (int r = tid; r < BM + 4 * BN; r += NT)
#pragma unroll
      for (int c = D; c < DP; c += 8) *reinterpret_cast<uint4*>(s_q + r * ROW + c) = make_uint4(0, 0, 0, 0);
  }
#if STREAMING
  // Rotated as they are loaded (padding rows zero); the writes are seen after run_keys' first barrier.
  auto load_query = [&](bool at_cache_position) {
    for (int c = tid; c < BM * D; c += NT) {
      const int r = c / D, d = c - r * D;
      float v = 0.f;
      if (r < rows) {
        const int t = qstart + q0 + r;
        const int row = at_cache_position ? min(rotary_rows[t], sink_row_cap) : rotary_rows[t];
        v = rotated_query_element(qkv + (long long)t * row_width + head * D, d, rotary_dim, cos_table, sin_table, row);
      }
      s_q[r * ROW + d] = f32_to_bf16(v);
    }
  };
#else
  for (int c = tid; c < BM * DCH; c += NT) {
    const int r = c / DCH, ch = c - r * DCH;
    const bool valid = r < rows;
    const long long src = valid ? (long long)(qstart + q0 + r) * row_width + head * D + ch * 8 : 0;
    cp_async16(s_q + r * ROW + ch * 8, qkv + src, valid ? 16 : 0);
  }
#endif

  // This thread's two rows of the warp's 16 (mma accumulator layout: row g and g + 8).
  const int g = lane >> 2, t4 = lane & 3;
  const int r0 = row_group * 16 + g, r1 = r0 + 8;
  const int qp0 = r0 < rows ? positions[qstart + q0 + r0] : -1;  // -1: padding row, every key masked
  const int qp1 = r1 < rows ? positions[qstart + q0 + r1] : -1;
  const int lo0 = max(window > 0 ? qp0 - window + 1 : 0, chunk_first_key(qp0, chunk));
  const int lo1 = max(window > 0 ? qp1 - window + 1 : 0, chunk_first_key(qp1, chunk));
  const float q_scale0 = q_scale * query_temperature(qp0, temp_floor, temp_scale, temp_offset);
  const float q_scale1 = q_scale * query_temperature(qp1, temp_floor, temp_scale, temp_offset);
#if TREE
  // The last key each row sees (its cache index), and its mask row.
  const int last0 = r0 < rows ? chunk_start + q0 + r0 : -1;
  const int last1 = r1 < rows ? chunk_start + q0 + r1 : -1;
  const int* mask0 = tree_mask + (long long)(qstart + q0 + min(r0, rows - 1)) * tree_words;
  const int* mask1 = tree_mask + (long long)(qstart + q0 + min(r1, rows - 1)) * tree_words;
  auto tree_sees = [&](const int* mask, int key) {
    const int j = key - chunk_start;
    return j < 0 || j >= 32 * tree_words || ((mask[j >> 5] >> (j & 31)) & 1);
  };
#else
  const int last0 = qp0, last1 = qp1;
#endif
  // Sink keys behind each row's window (none for a padding row).
  const int sink_end0 = min(stream_sinks, max(0, lo0)), sink_end1 = min(stream_sinks, max(0, lo1));

  float o[DS / 8][4];
#pragma unroll
  for (int n = 0; n < DS / 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  float m0 = NEG_INF, m1 = NEG_INF, l0 = 0.f, l1 = 0.f;  // l: this thread's share of the row sums

  // Keys [from, to) into the running softmax and accumulators: the sinks behind each row's window
  // (`sink_pass`), or its window. Ends on a barrier, so the tiles and s_q are free again.
  auto run_keys = [&](int from, int to, bool sink_pass) {
    auto load_kv = [&](int stage, int k0) {
#if KV_DTYPE == 0
      stage_kv_tile<BN, DCH, NT>(s_k + stage * BN * ROW, s_v + stage * BN * ROW, reinterpret_cast<const bf16*>(k_pool), reinterpret_cast<const bf16*>(v_pool), table, k0, to, block_size, num_kv_heads, kvh, ROW);
#else
      // An 8-bit tile's codes land in its stage, whose rows they become once landed (bf16_rows_from_codes).
      stage_kv_code_bytes<KV_DTYPE, BN, DCH, NT>(reinterpret_cast<unsigned char*>(s_k + stage * BN * ROW), reinterpret_cast<unsigned char*>(s_v + stage * BN * ROW),
                                                 s_scales + stage * 2 * BN * RS, s_scales + (stage * 2 + 1) * BN * RS, k_pool, v_pool, k_scales, v_scales, table, k0, to,
                                                 block_size, num_kv_heads, kvh);
#endif
    };
    const int num_tiles = (to - from + BN - 1) / BN;
    load_kv(0, from);  // without STREAMING, committed together with the Q tile
    for (int it = 0; it < num_tiles; it++) {
      const int k0 = from + it * BN;
      if (it + 1 < num_tiles) {
        load_kv((it + 1) & 1, k0 + BN);
        cp_async_wait<1>();
      } else {
        cp_async_wait<0>();
      }
      __syncthreads();
#if KV_DTYPE != 0
      bf16_rows_from_codes<KV_DTYPE, BN, DCH, NT, DP>(s_k + (it & 1) * BN * ROW, s_v + (it & 1) * BN * ROW, s_scales + (it & 1) * 2 * BN * RS,
                                                      s_scales + ((it & 1) * 2 + 1) * BN * RS, k_scale, v_scale, ROW);
#endif
      const bf16* tk = s_k + (it & 1) * BN * ROW;
      const bf16* tv = s_v + (it & 1) * BN * ROW;

      // S = Q Kᵀ for the warp's 16 rows and BN keys (over its slice of the head).
      float s[BN / 8][4];
#pragma unroll
      for (int n = 0; n < BN / 8; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < DS / 16; kk++) {
        unsigned int a[4];
        ldmatrix_x4(a, s_q + (row_group * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * ROW + slice + kk * 16 + (lane >> 4) * 8);
#pragma unroll
        for (int nn = 0; nn < BN / 16; nn++) {
          unsigned int b[4];
          ldmatrix_x4(b, tk + (nn * 16 + (lane & 7) + (lane >> 4) * 8) * ROW + slice + kk * 16 + ((lane >> 3) & 1) * 8);
          mma_bf16_16816(s[2 * nn], a, b[0], b[1]);
          mma_bf16_16816(s[2 * nn + 1], a, b[2], b[3]);
        }
      }
      if constexpr (DSPLIT == 2) {
        // Add the pair's partial scores: same rows, keys and accumulator layout, so lane to lane.
        // The next write to s_swap follows the tile's closing barrier, after every read of it.
#pragma unroll
        for (int n = 0; n < BN / 8; n++)
#pragma unroll
          for (int e = 0; e < 4; e++) s_swap[(warp * SWAP + n * 4 + e) * 32 + lane] = s[n][e];
        __syncthreads();
#pragma unroll
        for (int n = 0; n < BN / 8; n++)
#pragma unroll
          for (int e = 0; e < 4; e++) s[n][e] += s_swap[((warp ^ 1) * SWAP + n * 4 + e) * 32 + lane];
      }

      // Causal and sliding-window mask, then the online softmax update (log2 domain).
      float mx0 = NEG_INF, mx1 = NEG_INF;
#pragma unroll
      for (int n = 0; n < BN / 8; n++) {
#pragma unroll
        for (int e = 0; e < 2; e++) {
          const int key = k0 + n * 8 + t4 * 2 + e;
#if TREE
          const bool seen0 = key <= last0 && key >= lo0 && tree_sees(mask0, key);
          const bool seen1 = key <= last1 && key >= lo1 && tree_sees(mask1, key);
#else
          const bool seen0 = sink_pass ? key < sink_end0 : key <= last0 && key >= lo0;
          const bool seen1 = sink_pass ? key < sink_end1 : key <= last1 && key >= lo1;
#endif
#if SOFTCAP
          s[n][e] = seen0 ? softcap_log2 * fast_tanh(s[n][e] * q_scale0) : NEG_INF;
          s[n][2 + e] = seen1 ? softcap_log2 * fast_tanh(s[n][2 + e] * q_scale1) : NEG_INF;
#else
          s[n][e] = seen0 ? s[n][e] * q_scale0 : NEG_INF;
          s[n][2 + e] = seen1 ? s[n][2 + e] * q_scale1 : NEG_INF;
#endif
          mx0 = fmaxf(mx0, s[n][e]);
          mx1 = fmaxf(mx1, s[n][2 + e]);
        }
      }
      mx0 = fmaxf(mx0, __shfl_xor_sync(FULL_MASK, mx0, 1));
      mx0 = fmaxf(mx0, __shfl_xor_sync(FULL_MASK, mx0, 2));
      mx1 = fmaxf(mx1, __shfl_xor_sync(FULL_MASK, mx1, 1));
      mx1 = fmaxf(mx1, __shfl_xor_sync(FULL_MASK, mx1, 2));
      const float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
      // A row with no visible key yet keeps max -inf; exponentiate against 0 so nothing becomes NaN.
      const float ref0 = mn0 == NEG_INF ? 0.f : mn0, ref1 = mn1 == NEG_INF ? 0.f : mn1;
      const float alpha0 = fast_exp2(m0 - ref0), alpha1 = fast_exp2(m1 - ref1);
      m0 = mn0;
      m1 = mn1;
      float sum0 = 0.f, sum1 = 0.f;
#pragma unroll
      for (int n = 0; n < BN / 8; n++) {
        s[n][0] = fast_exp2(s[n][0] - ref0);
        s[n][1] = fast_exp2(s[n][1] - ref0);
        s[n][2] = fast_exp2(s[n][2] - ref1);
        s[n][3] = fast_exp2(s[n][3] - ref1);
        sum0 += s[n][0] + s[n][1];
        sum1 += s[n][2] + s[n][3];
      }
      l0 = l0 * alpha0 + sum0;
      l1 = l1 * alpha1 + sum1;
#pragma unroll
      for (int n = 0; n < DS / 8; n++) {
        o[n][0] *= alpha0;
        o[n][1] *= alpha0;
        o[n][2] *= alpha1;
        o[n][3] *= alpha1;
      }

      // O += P V: the score accumulators of two adjacent key groups form one A fragment.
#pragma unroll
      for (int kk = 0; kk < BN / 16; kk++) {
        unsigned int a[4];
        a[0] = pack_bf16x2(s[2 * kk][0], s[2 * kk][1]);
        a[1] = pack_bf16x2(s[2 * kk][2], s[2 * kk][3]);
        a[2] = pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
        a[3] = pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
        for (int dd = 0; dd < DS / 16; dd++) {
          unsigned int b[4];
          ldmatrix_x4_trans(b, tv + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * ROW + slice + dd * 16 + (lane >> 4) * 8);
          mma_bf16_16816(o[2 * dd], a, b[0], b[1]);
          mma_bf16_16816(o[2 * dd + 1], a, b[2], b[3]);
        }
      }
      __syncthreads();
    }
  };

#if STREAMING
  // The tile's last row has the latest window: its sinks behind it cover every row's.
  const int num_sinks = min(stream_sinks, max(0, (window > 0 ? positions[qstart + q0 + rows - 1] - window + 1 : 0)));
  if (num_sinks > 0) {
    load_query(true);
    run_keys(0, num_sinks, true);
  }
  load_query(false);
#endif
  run_keys(k_begin, k_end, false);
  cp_async_wait<0>();

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
  const long long out_row = (long long)num_heads * D;
  bf16* out0 = out + (long long)(qstart + q0 + r0) * out_row + head * D;
  bf16* out1 = out0 + 8 * out_row;
#pragma unroll
  for (int n = 0; n < DS / 8; n++) {
    const int col = slice + n * 8 + t4 * 2;
    if (col >= D) continue;
    if (r0 < rows) *reinterpret_cast<unsigned int*>(out0 + col) = pack_bf16x2(o[n][0] * inv0, o[n][1] * inv0);
    if (r1 < rows) *reinterpret_cast<unsigned int*>(out1 + col) = pack_bf16x2(o[n][2] * inv1, o[n][3] * inv1);
  }
}
