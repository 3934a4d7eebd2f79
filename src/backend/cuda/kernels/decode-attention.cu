// Decode attention (one query token per entry: decode_seqs[i] its sequence, decode_tokens[i] its
// flattened token, keys up to its position) over the paged KV cache, Flash-Decoding style:
// the context is cut into partitions handled by different CTAs, each writing a partial softmax
// (max, sum, unnormalized accumulator), and the last of a kv head's CTAs to finish merges them
// (merge_partitions_if_last, decode-partials.cuh). The launch has partitions for the longest
// context the block tables hold; each decode uses as many as its own keys need (decode-split.cuh)
// and the rest return at once. With one partition the CTA writes the final output directly.
//
// GQA: a CTA owns one KV head and all GROUP query heads that read it, so every K/V byte is
// loaded once per partition. Specialized at compile time by HEAD_DIM and GROUP, and by the
// options a model may turn on, so that plain attention pays nothing for them: SOFTCAP=1 caps
// each score at cap · tanh(score / cap) (Gemma 2); SINKS=1 adds each head's learned sink logit to
// its softmax's denominator (gpt-oss), once, when the partitions are merged; STREAMING=1 is
// StreamingLLM: the query arrives unrotated, is rotated at its rotary row for the window's keys,
// and the first partition also scores the sink keys behind the window, with the query rotated at
// its position inside the cache (min(row, sink_row_cap)). SPARSE=1 is Quest's sparse decode: the
// CTA of (decode, kv head) attends to the keys of the compacted block table sparse-select.cu
// chose for it (sparse_tables row, sparse_lens keys), as if they were the whole sequence; a
// verification chunk's tokens come as decodes of their own, one per position. TREE=1 (with SPARSE)
// is for draft trees: the window's keys, cache indices from sparse_windows' window_index on
// (compacted keys from its window_key on), that lie in the token's chunk count only where the
// token's tree_mask row sets their bit (its ancestors and itself).
#include "common.cuh"
#include "attention-span.cuh"
#include "decode-partials.cuh"

// nvcc-check: -DHEAD_DIM=64 -DGROUP=1 -DSOFTCAP=0 -DSINKS=0 -DSTREAMING=0 -DKV_DTYPE=0 -DSPARSE=0 -DTREE=0
// nvcc-check: -DHEAD_DIM=72 -DGROUP=3 -DSOFTCAP=0 -DSINKS=0 -DSTREAMING=0 -DKV_DTYPE=0 -DSPARSE=0 -DTREE=0
// nvcc-check: -DHEAD_DIM=96 -DGROUP=4 -DSOFTCAP=0 -DSINKS=0 -DSTREAMING=0 -DKV_DTYPE=0 -DSPARSE=0 -DTREE=0
// nvcc-check: -DHEAD_DIM=128 -DGROUP=8 -DSOFTCAP=0 -DSINKS=0 -DSTREAMING=0 -DKV_DTYPE=0 -DSPARSE=0 -DTREE=0
// nvcc-check: -DHEAD_DIM=256 -DGROUP=2 -DSOFTCAP=0 -DSINKS=0 -DSTREAMING=0 -DKV_DTYPE=0 -DSPARSE=0 -DTREE=0
// nvcc-check: -DHEAD_DIM=256 -DGROUP=2 -DSOFTCAP=1 -DSINKS=0 -DSTREAMING=0 -DKV_DTYPE=0 -DSPARSE=0 -DTREE=0
// nvcc-check: -DHEAD_DIM=64 -DGROUP=8 -DSOFTCAP=0 -DSINKS=1 -DSTREAMING=0 -DKV_DTYPE=0 -DSPARSE=0 -DTREE=0
// nvcc-check: -DHEAD_DIM=128 -DGROUP=4 -DSOFTCAP=1 -DSINKS=1 -DSTREAMING=0 -DKV_DTYPE=0 -DSPARSE=0 -DTREE=0
// nvcc-check: -DHEAD_DIM=64 -DGROUP=3 -DSOFTCAP=0 -DSINKS=0 -DSTREAMING=1 -DKV_DTYPE=0 -DSPARSE=0 -DTREE=0
// nvcc-check: -DHEAD_DIM=128 -DGROUP=4 -DSOFTCAP=1 -DSINKS=1 -DSTREAMING=1 -DKV_DTYPE=0 -DSPARSE=0 -DTREE=0
// nvcc-check: -DHEAD_DIM=128 -DGROUP=8 -DSOFTCAP=0 -DSINKS=0 -DSTREAMING=0 -DKV_DTYPE=1 -DSPARSE=0 -DTREE=0
// nvcc-check: -DHEAD_DIM=64 -DGROUP=3 -DSOFTCAP=0 -DSINKS=0 -DSTREAMING=0 -DKV_DTYPE=2 -DSPARSE=0 -DTREE=0
// nvcc-check: -DHEAD_DIM=128 -DGROUP=4 -DSOFTCAP=1 -DSINKS=1 -DSTREAMING=1 -DKV_DTYPE=2 -DSPARSE=0 -DTREE=0
// nvcc-check: -DHEAD_DIM=128 -DGROUP=4 -DSOFTCAP=0 -DSINKS=0 -DSTREAMING=0 -DKV_DTYPE=0 -DSPARSE=1 -DTREE=0
// nvcc-check: -DHEAD_DIM=64 -DGROUP=3 -DSOFTCAP=1 -DSINKS=1 -DSTREAMING=0 -DKV_DTYPE=2 -DSPARSE=1 -DTREE=0
// nvcc-check: -DHEAD_DIM=128 -DGROUP=4 -DSOFTCAP=0 -DSINKS=0 -DSTREAMING=0 -DKV_DTYPE=0 -DSPARSE=1 -DTREE=1
// nvcc-check: -DHEAD_DIM=64 -DGROUP=3 -DSOFTCAP=1 -DSINKS=0 -DSTREAMING=0 -DKV_DTYPE=2 -DSPARSE=1 -DTREE=1
// nvcc-check: -DHEAD_DIM=512 -DGROUP=8 -DSOFTCAP=0 -DSINKS=0 -DSTREAMING=0 -DKV_DTYPE=0 -DSPARSE=0 -DTREE=0
// nvcc-check: -DHEAD_DIM=512 -DGROUP=1 -DSOFTCAP=1 -DSINKS=1 -DSTREAMING=1 -DKV_DTYPE=2 -DSPARSE=0 -DTREE=0
// nvcc-check: -DHEAD_DIM=512 -DGROUP=16 -DSOFTCAP=0 -DSINKS=0 -DSTREAMING=0 -DKV_DTYPE=1 -DSPARSE=1 -DTREE=1
// nvcc-check: -DHEAD_DIM=128 -DGROUP=4 -DSOFTCAP=0 -DSINKS=0 -DSTREAMING=0 -DKV_DTYPE=3 -DSPARSE=0 -DTREE=0
// nvcc-check: -DHEAD_DIM=72 -DGROUP=3 -DSOFTCAP=1 -DSINKS=1 -DSTREAMING=1 -DKV_DTYPE=3 -DSPARSE=0 -DTREE=0
// nvcc-check: -DHEAD_DIM=64 -DGROUP=16 -DSOFTCAP=0 -DSINKS=0 -DSTREAMING=0 -DKV_DTYPE=3 -DSPARSE=1 -DTREE=1
// nvcc-check: -DHEAD_DIM=512 -DGROUP=8 -DSOFTCAP=0 -DSINKS=1 -DSTREAMING=0 -DKV_DTYPE=3 -DSPARSE=0 -DTREE=0

#if !defined(HEAD_DIM) || !defined(GROUP) || !defined(SOFTCAP) || !defined(SINKS) || !defined(STREAMING) || !defined(KV_DTYPE) || !defined(SPARSE) || !defined(TREE)
#error "compile with -DHEAD_DIM=<head dim> -DGROUP=<query heads per kv head> -DSOFTCAP=<0|1> -DSINKS=<0|1> -DSTREAMING=<0|1> -DKV_DTYPE=<0 bf16|1 fp8|2 int8|3 int4> -DSPARSE=<0|1> -DTREE=<0|1>"
#endif
#if TREE && !SPARSE
#error "TREE is a mode of SPARSE"
#endif
#if SPARSE && STREAMING
#error "SPARSE does not combine with STREAMING"
#endif

// NVRTC compiles device code only: helpers used in constant expressions need an execution space.
namespace {
__host__ __device__ constexpr int pow2_floor(int x) {
  int p = 1;
  while (p * 2 <= x) p *= 2;
  return p;
}
__host__ __device__ constexpr int min_c(int a, int b) { return a < b ? a : b; }
__host__ __device__ constexpr int max_c(int a, int b) { return a > b ? a : b; }

constexpr int D = HEAD_DIM;
constexpr int D8 = D / 8;       // 16-byte chunks per head row
constexpr int NT = 128;         // threads per CTA
constexpr int TK = 32;          // keys per tile: one per lane in the softmax step
constexpr int ROW = D + 8;      // smem row in bf16; the 16-byte pad puts consecutive rows on different banks
// Quantized caches: two stages of K and V codes (a row CODE_ROW bytes) and of int8's row scales or
// int4's (scale, minimum) pairs, one stage of f16 unit-value rows.
constexpr int CODE_ROW = KV_DTYPE == 3 ? D / 2 : D;
constexpr int RS = KV_DTYPE == 3 ? 2 : 1;  // floats a row's scales take: int8's scale, int4's (scale, minimum)
constexpr int CODE_BYTES = KV_DTYPE == 0 ? 0 : 2 * 2 * TK * CODE_ROW;
constexpr int SCALE_BYTES = KV_DTYPE == 0 ? 0 : 2 * 2 * TK * RS * 4;
constexpr int ROW_STAGES = KV_DTYPE == 0 ? 2 : 1;
// A shared K/V row's 8 values: bf16, or a quantized cache's unit values in f16 (unit_kv_tile).
__device__ __forceinline__ void unpack_row8(const uint4 v, float* f) {
  if (KV_DTYPE == 0) unpack8(v, f);
  else unpack8_f16(v, f);
}
constexpr int PAIRS = GROUP * TK;
// Scores: QK_SPLIT consecutive lanes share one (head, key) dot product when there are fewer pairs than threads.
constexpr int QK_SPLIT = min_c(pow2_floor(D8), max_c(1, pow2_floor(NT / PAIRS)));
// Values: an item is (head, 8-dim chunk); KS groups of threads split the keys when items are few.
constexpr int ITEMS = GROUP * D8;
constexpr int KS = ITEMS >= NT ? 1 : min_c(TK, pow2_floor(NT / ITEMS));
constexpr int LANES_PER_KS = NT / KS;
constexpr int ITEMS_PER_THREAD = (ITEMS + LANES_PER_KS - 1) / LANES_PER_KS;
static_assert(D % 8 == 0 && D <= 512, "head dim must be a multiple of 8, at most 512");
}  // namespace

// grid (numKvHeads, numDecodeSeqs, numPartitions), block NT. Dynamic shared memory (bytes,
// decodeSharedBytes): CODE_BYTES + SCALE_BYTES + 2 * ROW_STAGES * TK * ROW * 2 (K and V tiles) +
// (GROUP * D + GROUP * TK + 3 * GROUP) * 4, and with int4 2 * GROUP * 4 more: at D = 512, 130 KiB + 2.1 KiB per query head of the group
// (147 KiB for Gemma 4's group of 8), which A100's and Hopper's opt-in limits hold; the nvcc-check's
// GROUP=16 (164 KiB) fits Hopper's only. An 8-bit cache's codes stream in by cp.async while the
// previous tile's math runs: at 256 decodes of 640 tokens and a group of 2 on an H100 (2026-12-06)
// fp8 read its codes at 1.16 TB/s (1.0 through registers) where bf16 reads 2.7 TB/s, bound by
// dequantizing every value; the tile now becomes f16 unit values (unit_kv_tile), the scales applied
// to the query and output (fp8) or to each key's score and probability (int8). int4 does the same
// with its row's minimum: a score is scale · (q · codes) + minimum · Σq, and the values' minima,
// weighted by the probabilities, add to each head's outputs through one running sum a head (s_pm),
// rescaled with the accumulators. Here the instructions bound it too (491 GB/s at 16 decodes of 32k
// on an H100, 2026-12-06), so 8-bit and int4 decodes that decode-attention-mma.cu can take go there.
// out [numTokens, numHeads * D]; part_acc [numDecode, numHeads, numPartitions, D]; part_ml [..., 2].
// Scores live in the log2 domain: q_scale is scale · log2(e), or with SOFTCAP scale / cap, the
// capped score then being softcap_log2 · tanh(q · k) with softcap_log2 = cap · log2(e). sinks
// [numHeads] bf16 (natural-log logits) is read only with SINKS; cos/sin (the layer's f32 rotary
// table), rotary_rows, rotary_dim, stream_sinks and sink_row_cap only with STREAMING;
// sparse_tables [numDecode * numKvHeads, sparse_width] and sparse_lens only with SPARSE;
// sparse_windows [numDecode * numKvHeads, 3] and tree_mask [numTokens, tree_mask_words] only with TREE.
// chunk (Llama 4's chunked attention: keys from qpos - qpos % chunk on; 0: none) narrows the dense
// span; temp_floor, temp_scale and temp_offset scale each query by its temperature (attention-span.cuh; 0: none).
extern "C" __global__ void __launch_bounds__(NT) decode_attention_kernel(
    bf16* __restrict__ out, float* __restrict__ part_acc, float* __restrict__ part_ml, unsigned int* __restrict__ arrival,
    const bf16* __restrict__ qkv, const unsigned char* __restrict__ k_pool, const unsigned char* __restrict__ v_pool,
    const int* __restrict__ decode_seqs, const int* __restrict__ decode_tokens, const int* __restrict__ positions,
    const int* __restrict__ seq_lens, const int* __restrict__ block_tables, int max_blocks_per_seq,
    int block_size, int num_kv_heads, float q_scale, float softcap_log2, const bf16* __restrict__ sinks, int window,
    int min_partition_keys, int num_partitions, const float* __restrict__ cos_table, const float* __restrict__ sin_table,
    const int* __restrict__ rotary_rows, int rotary_dim, int stream_sinks, int sink_row_cap, const float* __restrict__ k_scales,
    const float* __restrict__ v_scales, float k_scale, float v_scale, const int* __restrict__ sparse_tables,
    const int* __restrict__ sparse_lens, int sparse_width, const int* __restrict__ sparse_windows,
    const int* __restrict__ tree_mask, int tree_mask_words, int chunk, float temp_floor, float temp_scale, int temp_offset) {
  PDL_PROLOGUE();
  extern __shared__ __align__(16) unsigned char smem[];
  // A quantized cache double-buffers its codes (and int8's row scales, int4's scale and minimum
  // pairs) and turns each tile into a single stage of f16 unit-value rows (unit_kv_tile); a bf16
  // cache double-buffers the rows themselves.
#if KV_DTYPE
  unsigned char* s_kc = smem;                  // [2][TK][CODE_ROW] codes
  unsigned char* s_vc = s_kc + CODE_BYTES / 2; // [2][TK][CODE_ROW]
  float* s_kscale = reinterpret_cast<float*>(s_vc + CODE_BYTES / 2);  // [2][TK][RS] (int8, int4)
  float* s_vscale = s_kscale + 2 * TK * RS;
#endif
  bf16* s_k = reinterpret_cast<bf16*>(smem + CODE_BYTES + SCALE_BYTES);  // [ROW_STAGES][TK][ROW]
  bf16* s_v = s_k + ROW_STAGES * TK * ROW;     // [ROW_STAGES][TK][ROW]
  float* s_q = reinterpret_cast<float*>(s_v + ROW_STAGES * TK * ROW);  // [GROUP][D], pre-scaled by q_scale
  float* s_s = s_q + GROUP * D;               // [GROUP][TK] scores, then probabilities
  float* s_m = s_s + GROUP * TK;              // running max per head (log2 domain)
  float* s_l = s_m + GROUP;                   // running sum per head
  float* s_alpha = s_l + GROUP;               // rescale factor of the current tile
#if KV_DTYPE == 3
  float* s_qsum = s_alpha + GROUP;            // per head, Σ of its pre-scaled query (int4's minima meet it)
  float* s_pm = s_qsum + GROUP;               // per head, the running Σ p · value minimum
#endif

  const int kvh = blockIdx.x, di = blockIdx.y, part = blockIdx.z, tid = threadIdx.x;
  const int num_heads = num_kv_heads * GROUP;
  const int token = decode_tokens[di];
#if SPARSE
  const long long sparse_row = (long long)di * num_kv_heads + kvh;
  const int lo = 0;
  const int hi = sparse_lens[sparse_row];
  const int* table = sparse_tables + sparse_row * sparse_width;
#if TREE
  // Compacted key kk >= window_key is cache index window_index + kk - window_key; chunk token j =
  // that less chunk_start is seen where bit j of the token's row is set (past the row's bits: seen).
  const int window_key = sparse_windows[sparse_row * 3];
  const int key_to_chunk = sparse_windows[sparse_row * 3 + 1] - window_key - sparse_windows[sparse_row * 3 + 2];
  auto seen = [&](int kk) {
    const int j = kk < window_key ? -1 : kk + key_to_chunk;
    return j < 0 || j >= 32 * tree_mask_words || ((tree_mask[(long long)token * tree_mask_words + (j >> 5)] >> (j & 31)) & 1);
  };
#endif
#else
  const int seq = decode_seqs[di];
  const int qpos = positions[token];
  const int lo = max(window > 0 ? max(0, qpos - window + 1) : 0, chunk_first_key(qpos, chunk));
  const int hi = min(seq_lens[seq], qpos + 1);
  const int* table = block_tables + (long long)seq * max_blocks_per_seq;
#endif
  // Partitions split the visible keys [lo, hi), so a sliding window needs no more CTAs than its width.
  const DecodeSplit split = decode_split(hi - lo, num_partitions, min_partition_keys);
  if (part >= split.used) return;  // a CTA for keys this decode does not have
  const int begin = lo + part * split.size;
  const int end = min(hi, begin + split.size);
  const long long head0 = (long long)di * num_heads + kvh * GROUP;  // first query head's row in the partials

  // With partitions, the last of the kv head's CTAs merges them (decode-partials.cuh).
  auto merge_if_last = [&]() {
    if (split.used > 1)
      merge_partitions_if_last<GROUP, D, NT, SINKS>(out, part_acc, part_ml, head0, num_partitions, split.used, token, num_heads, kvh, sinks, arrival,
                                                    reinterpret_cast<float*>(smem));
  };
  if (begin >= end) {  // a shorter sequence of the batch: nothing visible in this partition
    write_empty_partition<GROUP, D, NT>(out, part_ml, head0, part, num_partitions, split.used, token, num_heads, kvh);
    merge_if_last();
    return;
  }

  const int row_width = (num_heads + 2 * num_kv_heads) * D;
  const bf16* q = qkv + (long long)token * row_width + (long long)kvh * GROUP * D;
  // An fp8 cache's rows hold value / 256 (unit_kv_tile): its key scale, and the 256, go to the query.
  const float q_scale_t = q_scale * query_temperature(positions[token], temp_floor, temp_scale, temp_offset) * (KV_DTYPE == 1 ? k_scale * 256.f : 1.f);
  // s_q's writes are seen after the first tile's barrier in run_keys.
  auto load_query = [&](int row) {
#if STREAMING
    for (int i = tid; i < GROUP * D; i += NT) {
      const int h = i / D;
      s_q[i] = rotated_query_element(q + h * D, i - h * D, rotary_dim, cos_table, sin_table, row) * q_scale_t;
    }
#else
    for (int i = tid; i < GROUP * D; i += NT) s_q[i] = bf16_to_f32(q[i]) * q_scale_t;
#endif
#if KV_DTYPE == 3
    __syncthreads();
    for (int h = tid >> 5; h < GROUP; h += NT / 32) {
      float sum = 0.f;
      for (int i = tid & 31; i < D; i += 32) sum += s_q[h * D + i];
      sum = warp_sum(sum);
      if ((tid & 31) == 0) s_qsum[h] = sum;
    }
#endif
  };
  if (tid < GROUP) {
    s_m[tid] = NEG_INF;
    s_l[tid] = 0.f;
#if KV_DTYPE == 3
    s_pm[tid] = 0.f;
#endif
  }

  const int ks = tid / LANES_PER_KS, item_lane = tid - ks * LANES_PER_KS;
  float acc[ITEMS_PER_THREAD][8];
#pragma unroll
  for (int j = 0; j < ITEMS_PER_THREAD; j++)
#pragma unroll
    for (int i = 0; i < 8; i++) acc[j][i] = 0.f;

  // Keys [from, to) into the running softmax and accumulators; ends on a barrier, so the tiles
  // and s_q are free again.
  auto run_keys = [&](int from, int to) {
    auto load_tile = [&](int stage, int k0) {
#if KV_DTYPE == 0
      stage_kv_tile<TK, D8, NT>(s_k + stage * TK * ROW, s_v + stage * TK * ROW, reinterpret_cast<const bf16*>(k_pool), reinterpret_cast<const bf16*>(v_pool), table, k0, to, block_size, num_kv_heads, kvh, ROW);
#else
      stage_kv_code_bytes<KV_DTYPE, TK, D8, NT>(s_kc + stage * TK * CODE_ROW, s_vc + stage * TK * CODE_ROW, s_kscale + stage * TK * RS, s_vscale + stage * TK * RS, k_pool, v_pool, k_scales, v_scales, table, k0, to, block_size, num_kv_heads, kvh);
#endif
    };
    const int num_tiles = (to - from + TK - 1) / TK;
    load_tile(0, from);
    for (int t = 0; t < num_tiles; t++) {
      const int k0 = from + t * TK;
      if (t + 1 < num_tiles) {
        load_tile((t + 1) & 1, k0 + TK);
        cp_async_wait<1>();
      } else {
        cp_async_wait<0>();
      }
      __syncthreads();
#if KV_DTYPE == 0
      const bf16* tk = s_k + (t & 1) * TK * ROW;
      const bf16* tv = s_v + (t & 1) * TK * ROW;
#else
      // The last tile's math ended on a barrier, so the one stage of rows is free.
      unit_kv_tile<KV_DTYPE, TK, D8, NT>(s_k, s_v, s_kc + (t & 1) * TK * CODE_ROW, s_vc + (t & 1) * TK * CODE_ROW, ROW);
      __syncthreads();
      const bf16* tk = s_k;
      const bf16* tv = s_v;
#endif

      // Scores. The trip count is uniform across the block so the shuffles see full warps.
      for (int base = 0; base < PAIRS * QK_SPLIT; base += NT) {
        const int item = base + tid;
        const int pair = item / QK_SPLIT, sub = item % QK_SPLIT;
        const bool ok = pair < PAIRS;
        const int h = ok ? pair / TK : 0, key = pair % TK;
        float dot = 0.f;
        if (ok) {
          for (int c = sub; c < D8; c += QK_SPLIT) {
            float kf[8];
            unpack_row8(*reinterpret_cast<const uint4*>(tk + key * ROW + c * 8), kf);
            const float* qh = s_q + h * D + c * 8;
#pragma unroll
            for (int i = 0; i < 8; i++) dot += qh[i] * kf[i];
          }
        }
#pragma unroll
        for (int o = QK_SPLIT / 2; o > 0; o >>= 1) dot += __shfl_xor_sync(FULL_MASK, dot, o);
#if KV_DTYPE == 2
        dot *= s_kscale[(t & 1) * TK + key];  // int8: the key's own scale, once per score
#elif KV_DTYPE == 3
        if (ok) {  // int4: scale · (q · codes) + minimum · Σq
          const float* key_scale = s_kscale + ((t & 1) * TK + key) * 2;
          dot = __fmaf_rn(dot, key_scale[0], key_scale[1] * s_qsum[h]);
        }
#endif
#if SOFTCAP
        dot = softcap_log2 * fast_tanh(dot);
#endif
#if TREE
        if (ok && sub == 0) s_s[h * TK + key] = k0 + key < to && seen(k0 + key) ? dot : NEG_INF;
#else
        if (ok && sub == 0) s_s[h * TK + key] = k0 + key < to ? dot : NEG_INF;
#endif
      }
      __syncthreads();

      // Online softmax, one warp per head. The tile's first key is always visible, so the max is
      // finite; with TREE a tile may hide every key, and then adds nothing while the max is -inf.
      const int warp = tid >> 5, lane = tid & 31;
      for (int h = warp; h < GROUP; h += NT / 32) {
        const float s = s_s[h * TK + lane];
        const float m_old = s_m[h];
        const float m_new = fmaxf(m_old, warp_max(s));
#if TREE
        const float p = m_new == NEG_INF ? 0.f : fast_exp2(s - m_new);
#else
        const float p = fast_exp2(s - m_new);
#endif
        const float sum = warp_sum(p);
#if KV_DTYPE == 3
        // int4: this tile's Σ p · value minimum (zero-filled keys past the end carry p = 0 and minimum 0).
        const float pm = warp_sum(p * s_vscale[((t & 1) * TK + lane) * 2 + 1]);
#endif
        s_s[h * TK + lane] = p;
        if (lane == 0) {
#if TREE
          const float alpha = m_new == NEG_INF ? 1.f : fast_exp2(m_old - m_new);
#else
          const float alpha = fast_exp2(m_old - m_new);
#endif
          s_alpha[h] = alpha;
          s_l[h] = s_l[h] * alpha + sum;
#if KV_DTYPE == 3
          s_pm[h] = s_pm[h] * alpha + pm;
#endif
          s_m[h] = m_new;
        }
      }
      __syncthreads();

      // acc = acc * alpha + P V over this thread's share of the keys.
#pragma unroll
      for (int j = 0; j < ITEMS_PER_THREAD; j++) {
        const int item = item_lane + j * LANES_PER_KS;
        if (item < ITEMS) {
          const int h = item / D8, c = item - h * D8;
          const float alpha = s_alpha[h];
#pragma unroll
          for (int i = 0; i < 8; i++) acc[j][i] *= alpha;
          for (int key = ks; key < TK; key += KS) {
#if KV_DTYPE == 2
            const float p = s_s[h * TK + key] * s_vscale[(t & 1) * TK + key];  // int8: the value's own scale
#elif KV_DTYPE == 3
            const float p = s_s[h * TK + key] * s_vscale[((t & 1) * TK + key) * 2];  // int4: the value's own scale
#else
            const float p = s_s[h * TK + key];
#endif
            float vf[8];
            unpack_row8(*reinterpret_cast<const uint4*>(tv + key * ROW + c * 8), vf);
#pragma unroll
            for (int i = 0; i < 8; i++) acc[j][i] += p * vf[i];
          }
        }
      }
      __syncthreads();
    }
  };

#if STREAMING
  // Sink keys behind the window, scored once (by the first partition) with the query at its
  // position inside the cache; then the window's keys with the query at its own row.
  const int row = rotary_rows[token];
  const int num_sinks = part == 0 ? min(stream_sinks, lo) : 0;
  if (num_sinks > 0) {
    load_query(min(row, sink_row_cap));
    run_keys(0, num_sinks);
  }
  load_query(row);
#else
  load_query(0);
#endif
  run_keys(begin, end);

  if (KS > 1) {
    // Merge the key splits. The K tiles are free: every copy completed and the loop ended on a barrier.
    float* s_red = reinterpret_cast<float*>(smem);  // [KS][ITEMS][8]
    if (item_lane < ITEMS)
#pragma unroll
      for (int i = 0; i < 8; i++) s_red[(ks * ITEMS + item_lane) * 8 + i] = acc[0][i];
    __syncthreads();
    if (ks == 0 && item_lane < ITEMS)
#pragma unroll
      for (int i = 0; i < 8; i++) {
        float v = 0.f;
        for (int k = 0; k < KS; k++) v += s_red[(k * ITEMS + item_lane) * 8 + i];
        acc[0][i] = v;
      }
  }
  // Threads of the other key slices only wait for the merge.
  if (ks == 0) {
#if KV_DTYPE == 1
    // An fp8 cache's values came as value / 256: their scale, and the 256, go to the output.
#pragma unroll
    for (int j = 0; j < ITEMS_PER_THREAD; j++)
#pragma unroll
      for (int i = 0; i < 8; i++) acc[j][i] *= v_scale * 256.f;
#endif
#if KV_DTYPE == 3
    // int4: the values' minima, Σ p · minimum a head, go to every one of its outputs.
#pragma unroll
    for (int j = 0; j < ITEMS_PER_THREAD; j++) {
      const int item = item_lane + j * LANES_PER_KS;
      if (item < ITEMS)
#pragma unroll
        for (int i = 0; i < 8; i++) acc[j][i] += s_pm[item / D8];
    }
#endif

#pragma unroll
    for (int j = 0; j < ITEMS_PER_THREAD; j++) {
      const int item = item_lane + j * LANES_PER_KS;
      if (item >= ITEMS) continue;
      const int h = item / D8, c = item - h * D8;
      if (split.used == 1) {
#if SINKS
        const float inv = sink_normalizer(s_m[h], s_l[h], bf16_to_f32(sinks[kvh * GROUP + h]) * LOG2E);
#else
        const float inv = 1.f / s_l[h];
#endif
        float o[8];
#pragma unroll
        for (int i = 0; i < 8; i++) o[i] = acc[j][i] * inv;
        *reinterpret_cast<uint4*>(out + (long long)token * num_heads * D + (kvh * GROUP + h) * D + c * 8) = pack8(o);
      } else {
        const long long row = (head0 + h) * num_partitions + part;
        float4* dst = reinterpret_cast<float4*>(part_acc + row * D + c * 8);
        dst[0] = make_float4(acc[j][0], acc[j][1], acc[j][2], acc[j][3]);
        dst[1] = make_float4(acc[j][4], acc[j][5], acc[j][6], acc[j][7]);
        if (c == 0) {
          part_ml[row * 2] = s_m[h];
          part_ml[row * 2 + 1] = s_l[h];
        }
      }
    }
  }
  merge_if_last();
}
