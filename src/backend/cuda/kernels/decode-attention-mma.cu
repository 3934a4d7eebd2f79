// Decode attention on tensor cores (mma.sync m16n8k16, f32 accumulators) over a bf16 cache (bf16 in)
// or a quantized one (fp8, int8, int4; f16 in). decode-attention.cu does the math on CUDA cores,
// where the group's few query heads get only a few multiply-adds from each value it loads: over
// 8-bit codes (half the bytes) the instructions bound it, and over bf16 each 32-key tile costs four
// barriers and a chain of shared-memory round trips, which at short contexts (a few tiles a CTA)
// is most of the launch. Here a CTA of (kv head, decode,
// partition) holds the GROUP query heads as the 16 rows of an mma tile (rows past GROUP are zeros)
// and streams the partition's keys in tiles of TK, their codes queued STAGES - 1 tiles ahead by
// cp.async. Each of its 4 warps takes 16 keys of a tile and reads their codes straight into mma
// fragments with ldmatrix, turning each code pair into an f16 pair of unit values in registers
// (codes_to_f16x2: fp8 value / 256, int8's integer; both exact): every code is read from shared
// memory once and converted once. An 8-bit ldmatrix hands a lane four adjacent codes where an f16
// fragment wants pairs further apart, so the head dims are permuted, which a dot product does not
// see: the query is staged in the keys' order (query_column), and the output's dims come out in
// the values' order (output_column). S = Q Kᵀ is scaled per key (int8's row scale) or per tensor
// (fp8's, with the 256), an online softmax runs per row, then O += P V, P scaled by int8's value
// row scale. The warps' running max, sum and output are merged at the end; with partitions the
// CTA writes them as decode-attention.cu's partials, and the last to finish merges them. As
// there, SOFTCAP=1 caps each score at cap · tanh(score / cap) and SINKS=1 adds each head's learned
// sink logit to the softmax's denominator (here when one partition ends the decode, else in the
// merge); sliding windows, chunked attention and query temperature are runtime arguments.
// StreamingLLM and Quest's sparse tables go to decode-attention.cu.
// bf16 (KV_DTYPE=0) needs no conversion: rows are staged as they lie in the pool, keys feed
// ldmatrix in their own dim order, and P is rounded to bf16 for O += P V, as FlashAttention does.
// int4 (two codes a byte, head dims a multiple of 64) reads half the bytes through the same path: an
// ldmatrix word holds eight codes of a key (or, transposed, four of each of two keys), and each
// shift-and-mask (nibbles_to_f16x2) takes the f16 pair an mma fragment wants from it, the dims
// permuted to match as for 8-bit codes. A score is the key's scale · (q · codes) + its minimum ·
// Σq (the row's query sum, once a CTA); P is scaled by the values' scales, and each row keeps a
// running Σ p · value minimum, rescaled with its accumulators and added to each of its outputs.
#include "common.cuh"
#include "mma.cuh"
#include "attention-span.cuh"
#include "decode-partials.cuh"

// nvcc-check: -DHEAD_DIM=128 -DGROUP=8 -DKV_DTYPE=0
// nvcc-check: -DHEAD_DIM=64 -DGROUP=1 -DKV_DTYPE=0 -DSINKS=1
// nvcc-check: -DHEAD_DIM=256 -DGROUP=2 -DKV_DTYPE=0 -DSOFTCAP=1
// nvcc-check: -DHEAD_DIM=96 -DGROUP=16 -DKV_DTYPE=0
// nvcc-check: -DHEAD_DIM=64 -DGROUP=1 -DKV_DTYPE=1
// nvcc-check: -DHEAD_DIM=256 -DGROUP=2 -DKV_DTYPE=1 -DSOFTCAP=1
// nvcc-check: -DHEAD_DIM=64 -DGROUP=8 -DKV_DTYPE=2 -DSINKS=1
// nvcc-check: -DHEAD_DIM=128 -DGROUP=4 -DKV_DTYPE=2 -DSOFTCAP=1 -DSINKS=1
// nvcc-check: -DHEAD_DIM=128 -DGROUP=4 -DKV_DTYPE=1
// nvcc-check: -DHEAD_DIM=128 -DGROUP=8 -DKV_DTYPE=2
// nvcc-check: -DHEAD_DIM=96 -DGROUP=3 -DKV_DTYPE=2
// nvcc-check: -DHEAD_DIM=256 -DGROUP=16 -DKV_DTYPE=1
// nvcc-check: -DHEAD_DIM=128 -DGROUP=4 -DKV_DTYPE=3
// nvcc-check: -DHEAD_DIM=64 -DGROUP=8 -DKV_DTYPE=3 -DSINKS=1
// nvcc-check: -DHEAD_DIM=256 -DGROUP=2 -DKV_DTYPE=3 -DSOFTCAP=1
// nvcc-check: -DHEAD_DIM=192 -DGROUP=16 -DKV_DTYPE=3

#if !defined(HEAD_DIM) || !defined(GROUP) || !defined(KV_DTYPE)
#error "compile with -DHEAD_DIM=<head dim> -DGROUP=<query heads per kv head, at most 16> -DKV_DTYPE=<0 bf16|1 fp8|2 int8|3 int4> [-DSOFTCAP=<0|1>] [-DSINKS=<0|1>]"
#endif
#ifndef SOFTCAP
#define SOFTCAP 0
#endif
#ifndef SINKS
#define SINKS 0
#endif

namespace {
constexpr int D = HEAD_DIM;
constexpr int KSTEPS = D / 16;   // mma k-steps over the head
constexpr int DTILES = D / 8;    // 8-column output tiles
constexpr int NT = 128;          // 4 warps
constexpr int WARPS = NT / 32;
constexpr int TK = 64;           // keys per tile: 16 per warp
constexpr int CODE_ROW = KV_DTYPE == 0 ? 2 * D : KV_DTYPE == 3 ? D / 2 : D;  // a row's bytes (bf16 values or codes)
constexpr int RS = KV_DTYPE == 3 ? 2 : 1;  // floats of a row's scales: int8's scale, int4's (scale, minimum)
// Code tiles in shared memory, STAGES - 1 in flight while one is read: int4's tiles are half the
// bytes, so one stage more keeps as many in flight (and holds the output exchange below); bf16's
// are twice the bytes, and past 128 dims two stages (135 KiB at 256) keep within A100's 163 KiB.
constexpr int STAGES = KV_DTYPE == 3 ? 4 : KV_DTYPE == 0 && D > 128 ? 2 : 3;
constexpr int ROWB = CODE_ROW + 16;  // code row stride in bytes: an odd count of 16-byte units keeps ldmatrix conflict-free
constexpr int STAGE_BYTES = 2 * TK * ROWB;  // K then V codes
constexpr int QROW = D + 8;      // query row stride (f16, bf16 over a bf16 cache)
static_assert(KV_DTYPE >= 0 && KV_DTYPE <= 3, "KV_DTYPE 0 bf16, 1 fp8, 2 int8 or 3 int4");
static_assert(D % (KV_DTYPE == 3 ? 64 : 32) == 0 && D <= 256, "head dim a multiple of 32 (int4: 64), at most 256");
static_assert(GROUP >= 1 && GROUP <= 16, "a group of at most 16 query heads (one mma row tile)");
static_assert(WARPS * 16 * D * 4 <= STAGES * STAGE_BYTES, "the output exchange fits in the code stages");

// The head dim that the keys' fragments put at k-column L. 8-bit: a lane's ldmatrix word holds codes
// 4 t4 .. 4 t4 + 3 of a 16-code half of a 32-dim chunk, which serve as the pairs at 2 t4 and 2 t4 + 8.
// int4: it holds codes 8 t4 .. 8 t4 + 7 of the 32-dim chunk, whose nibble pairs (i, 4 + i) serve
// k-step h (L >> 4 & 1) as the pairs at 2 t4 (i = 2 h) and 2 t4 + 8 (i = 2 h + 1).
__device__ __forceinline__ int query_column(int L) {
  if (KV_DTYPE == 0) return L;
  if (KV_DTYPE == 3) return 32 * (L >> 5) + 8 * ((L & 7) >> 1) + 2 * ((L >> 4) & 1) + ((L >> 3) & 1) + 4 * (L & 1);
  return 32 * (L >> 5) + 16 * ((L >> 4) & 1) + 4 * ((L & 7) >> 1) + 2 * ((L >> 3) & 1) + (L & 1);
}
// The head dim of column n of output tile j = 4 c + q. 8-bit: a transposed ldmatrix word holds the
// code pair at dims 2 g, 2 g + 1 of a 16-dim half (q >> 1) of chunk c, the two dims split into q & 1.
// int4: it holds dims 4 g .. 4 g + 3 of chunk c, nibble q of each key going to tile 4 c + q.
__device__ __forceinline__ int output_column(int j, int n) {
  if (KV_DTYPE == 0) return 8 * j + n;
  if (KV_DTYPE == 3) return 32 * (j >> 2) + 4 * n + (j & 3);
  return 32 * (j >> 2) + 16 * ((j >> 1) & 1) + 2 * n + (j & 1);
}

// d (16x8 f32) += a (16x16 f16) * b (16x8 f16). Unused over a bf16 cache, which takes mma_bf16_16816.
[[maybe_unused]] __device__ __forceinline__ void mma_f16_16816(float (&d)[4], const unsigned int (&a)[4], unsigned int b0, unsigned int b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ unsigned int pack_f16x2(float lo, float hi) {
  unsigned int r;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
}  // namespace

// Dynamic shared memory (decodeMmaSharedBytes): STAGES stages of K then V codes [TK][ROWB] bytes,
// the row scales [STAGES][2][TK][RS] floats (int8, int4), the query rows [16][QROW] f16, and each warp's row
// maxima and sums [WARPS][16][2] floats. The code stages serve again, once every tile is done, as
// the warps' output exchange [WARPS][16][D] floats.
// grid (numKvHeads, numDecode, numPartitions), block NT. Arguments as decode_attention_kernel's
// subset: out [numTokens, numHeads * D]; part_acc / part_ml as its partials; with SOFTCAP q_scale
// is scale / cap and softcap_log2 cap · log2(e); sinks [numHeads] bf16, read only with SINKS.
extern "C" __global__ void __launch_bounds__(NT) decode_attention_mma_kernel(
    bf16* __restrict__ out, float* __restrict__ part_acc, float* __restrict__ part_ml, unsigned int* __restrict__ arrival, const bf16* __restrict__ qkv,
    const unsigned char* __restrict__ k_pool, const unsigned char* __restrict__ v_pool, const int* __restrict__ decode_seqs,
    const int* __restrict__ decode_tokens, const int* __restrict__ positions, const int* __restrict__ seq_lens,
    const int* __restrict__ block_tables, int max_blocks_per_seq, int block_size, int num_kv_heads, float q_scale,
    float softcap_log2, const bf16* __restrict__ sinks, int window,
    int min_partition_keys, int num_partitions, const float* __restrict__ k_scales, const float* __restrict__ v_scales, float k_scale,
    float v_scale, int chunk, float temp_floor, float temp_scale, int temp_offset) {
  PDL_PROLOGUE();
  extern __shared__ __align__(16) unsigned char smem[];
  unsigned char* s_codes = smem;                                              // [STAGES][2][TK][ROWB]
  float* s_scale = reinterpret_cast<float*>(smem + STAGES * STAGE_BYTES);    // [STAGES][2][TK][RS] (int8, int4)
  unsigned short* s_q = reinterpret_cast<unsigned short*>(s_scale + STAGES * 2 * TK * RS);  // [16][QROW] f16
  float* s_ml = reinterpret_cast<float*>(s_q + 16 * QROW);                   // [WARPS][16][2]
  float* s_out = reinterpret_cast<float*>(smem);                              // [WARPS][16][D], once the codes are done

  const int kvh = blockIdx.x, di = blockIdx.y, part = blockIdx.z, tid = threadIdx.x;
  const int warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int num_heads = num_kv_heads * GROUP;
  const int token = decode_tokens[di];
  const int seq = decode_seqs[di];
  const int qpos = positions[token];
  const int lo = max(window > 0 ? max(0, qpos - window + 1) : 0, chunk_first_key(qpos, chunk));
  const int hi = min(seq_lens[seq], qpos + 1);
  const int* table = block_tables + (long long)seq * max_blocks_per_seq;
  const DecodeSplit split = decode_split(hi - lo, num_partitions, min_partition_keys);
  if (part >= split.used) return;  // a CTA for keys this decode does not have
  const int begin = lo + part * split.size;
  const int end = min(hi, begin + split.size);
  const long long head0 = (long long)di * num_heads + kvh * GROUP;

  // With partitions, the last of the kv head's CTAs merges them (decode-partials.cuh).
  auto merge_if_last = [&]() {
    if (split.used > 1)
      merge_partitions_if_last<GROUP, D, NT, SINKS>(out, part_acc, part_ml, head0, num_partitions, split.used, token, num_heads, kvh, sinks, arrival,
                                                    reinterpret_cast<float*>(smem));
  };
  if (begin >= end) {  // nothing visible in this partition
    write_empty_partition<GROUP, D, NT>(out, part_ml, head0, part, num_partitions, split.used, token, num_heads, kvh);
    merge_if_last();
    return;
  }

  // Tile t's codes (and int8's and int4's row scales) into stage t % STAGES, one commit group a tile;
  // a tile past the last commits an empty group, so that every iteration waits on the same count.
  const int num_tiles = (end - begin + TK - 1) / TK;
  auto load_tile = [&](int t) {
    if (t < num_tiles) {
      const int k0 = begin + t * TK;
      unsigned char* stage = s_codes + (t % STAGES) * STAGE_BYTES;
      if (KV_DTYPE >= 2 && tid < 2 * TK) {
        const int r = tid % TK;
        const bool valid = k0 + r < end;
        const long long at = valid ? (kv_slot(table, k0 + r, block_size) * num_kv_heads + kvh) * RS : 0;
        float* dst = s_scale + (((t % STAGES) * 2 + tid / TK) * TK + r) * RS;
        if (KV_DTYPE == 3) cp_async8(dst, (tid < TK ? k_scales : v_scales) + at, valid ? 8 : 0);
        else cp_async4(dst, (tid < TK ? k_scales : v_scales) + at, valid ? 4 : 0);
      }
      stage_kv_tile<TK, CODE_ROW / 16, NT>(stage, stage + TK * ROWB, k_pool, v_pool, table, k0, end, block_size, num_kv_heads, kvh, ROWB);
    } else {
      cp_async_commit();
    }
  };
#pragma unroll
  for (int t = 0; t < STAGES - 1; t++) load_tile(t);

  // The query rows in f16 (bf16 over a bf16 cache), scaled into the log2 domain and in the keys' dim
  // order (query_column); an fp8 cache's key scale and 256 apply to the scores instead (a query
  // times 256 could leave f16's range).
  const bf16* q = qkv + (long long)token * (num_heads + 2 * num_kv_heads) * D + (long long)kvh * GROUP * D;
  const float q_scale_t = q_scale * query_temperature(qpos, temp_floor, temp_scale, temp_offset);
  for (int i = tid; i < 16 * D; i += NT) {
    const int h = i / D, c = i - h * D;
    const float v = h < GROUP ? bf16_to_f32(q[h * D + query_column(c)]) * q_scale_t : 0.f;
    s_q[h * QROW + c] = (unsigned short)((KV_DTYPE == 0 ? pack_bf16x2(v, 0.f) : pack_f16x2(v, 0.f)) & 0xffffu);
  }
  // int4: Σ of rows g and g + 8 of the f16 query, which its key minima meet; a quad's lanes share a row.
  float qsum[2] = {0.f, 0.f};
#if KV_DTYPE == 3
  __syncthreads();
#pragma unroll
  for (int r = 0; r < 2; r++) {
    float sum = 0.f;
    for (int c = t4; c < D; c += 4) sum += f16_to_f32(s_q[(g + 8 * r) * QROW + c]);
    sum += __shfl_xor_sync(FULL_MASK, sum, 1);
    qsum[r] = sum + __shfl_xor_sync(FULL_MASK, sum, 2);
  }
#endif

  float o[DTILES][4];
#pragma unroll
  for (int j = 0; j < DTILES; j++)
#pragma unroll
    for (int i = 0; i < 4; i++) o[j][i] = 0.f;
  float m[2] = {NEG_INF, NEG_INF}, l[2] = {0.f, 0.f};  // rows g and g + 8
  float pm[2] = {0.f, 0.f};  // int4: the lane's share of Σ p · value minimum, rows g and g + 8
  const float k_factor = KV_DTYPE == 1 ? k_scale * 256.f : 1.f;
  unsigned int qa[KSTEPS][4];
  for (int t = 0; t < num_tiles; t++) {
    const int k0 = begin + t * TK;
    cp_async_wait<STAGES - 2>();
    __syncthreads();  // tile t landed for every thread; tile t - 1's stage is read by every warp
    load_tile(t + STAGES - 1);
    if (t == 0) {
#pragma unroll
      for (int kk = 0; kk < KSTEPS; kk++) ldmatrix_x4(qa[kk], s_q + ((lane & 7) + ((lane >> 3) & 1) * 8) * QROW + kk * 16 + (lane >> 4) * 8);
    }
    const unsigned char* wk = s_codes + (t % STAGES) * STAGE_BYTES + warp * 16 * ROWB;  // the warp's 16 keys
    const unsigned char* wv = wk + TK * ROWB;

    // S: the 16 rows against the warp's keys 0-7 (s[0]) and 8-15 (s[1]). A 32-dim chunk's ldmatrix
    // gives words of keys g (w[0], w[1]) and 8 + g (w[2], w[3]), dims 4 t4 (w[0], w[2]) and 16 + 4 t4.
    float s[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
#if KV_DTYPE == 3
    // int4: a 64-dim span's ldmatrix gives words of keys g (w[0]) and 8 + g (w[1]) over its first
    // 32 dims, w[2] and w[3] over the next; each word feeds two k-steps (query_column).
#pragma unroll
    for (int c = 0; c < D / 64; c++) {
      unsigned int w[4];
      ldmatrix_x4(w, wk + ((lane & 7) + ((lane >> 3) & 1) * 8) * ROWB + 32 * c + (lane >> 4) * 16);
#pragma unroll
      for (int half = 0; half < 2; half++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
          const int kk = 4 * c + 2 * half + h;
          mma_f16_16816(s[0], qa[kk], nibbles_to_f16x2(w[2 * half], 2 * h), nibbles_to_f16x2(w[2 * half], 2 * h + 1));
          mma_f16_16816(s[1], qa[kk], nibbles_to_f16x2(w[2 * half + 1], 2 * h), nibbles_to_f16x2(w[2 * half + 1], 2 * h + 1));
        }
    }
#elif KV_DTYPE == 0
    // bf16: a k-step's ldmatrix gives keys g (w[0], w[1]) and 8 + g (w[2], w[3]), dims 2 t4 of its
    // first and second 8: the column fragments as they are.
#pragma unroll
    for (int kk = 0; kk < KSTEPS; kk++) {
      unsigned int w[4];
      ldmatrix_x4(w, wk + ((lane & 7) + (lane >> 4) * 8) * ROWB + 32 * kk + ((lane >> 3) & 1) * 16);
      mma_bf16_16816(s[0], qa[kk], w[0], w[1]);
      mma_bf16_16816(s[1], qa[kk], w[2], w[3]);
    }
#else
#pragma unroll
    for (int c = 0; c < D / 32; c++) {
      unsigned int w[4];
      ldmatrix_x4(w, wk + ((lane & 7) + (lane >> 4) * 8) * ROWB + 32 * c + ((lane >> 3) & 1) * 16);
#pragma unroll
      for (int h = 0; h < 2; h++) {
        mma_f16_16816(s[0], qa[2 * c + h], codes_to_f16x2<KV_DTYPE>(w[h], CODES_01), codes_to_f16x2<KV_DTYPE>(w[h], CODES_23));
        mma_f16_16816(s[1], qa[2 * c + h], codes_to_f16x2<KV_DTYPE>(w[2 + h], CODES_01), codes_to_f16x2<KV_DTYPE>(w[2 + h], CODES_23));
      }
    }
#endif
    // Each key's scale, the tile's tail masked; lane holds rows g (s[n][0..1]) and g + 8 (s[n][2..3]), keys 8n + 2 t4 + {0, 1}.
    const float* ks = s_scale + ((t % STAGES) * 2 * TK + warp * 16) * RS;
    const float* vs = ks + TK * RS;
#pragma unroll
    for (int n = 0; n < 2; n++)
#pragma unroll
      for (int i = 0; i < 4; i++) {
        const int key = 8 * n + 2 * t4 + (i & 1);
        const bool visible = k0 + warp * 16 + key < end;
        const float score = KV_DTYPE == 3 ? __fmaf_rn(s[n][i], ks[2 * key], ks[2 * key + 1] * qsum[i >> 1])
                                          : s[n][i] * (KV_DTYPE == 2 ? ks[key] : k_factor);
        s[n][i] = visible ? (SOFTCAP ? softcap_log2 * fast_tanh(score) : score) : NEG_INF;
      }
    // Online softmax per row over the warp's keys: a row's 16 scores lie in one quad of lanes.
    unsigned int pa[4];
#pragma unroll
    for (int r = 0; r < 2; r++) {
      float mx = fmaxf(fmaxf(s[0][2 * r], s[0][2 * r + 1]), fmaxf(s[1][2 * r], s[1][2 * r + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 2));
      const float m_new = fmaxf(m[r], mx);
      // A warp whose keys are all past the end keeps m at -inf: nothing added, nothing rescaled.
      const float alpha = m_new == NEG_INF ? 1.f : fast_exp2(m[r] - m_new);
      float p[4];
#pragma unroll
      for (int n = 0; n < 2; n++)
#pragma unroll
        for (int c = 0; c < 2; c++) p[2 * n + c] = m_new == NEG_INF ? 0.f : fast_exp2(s[n][2 * r + c] - m_new);
      float sum = p[0] + p[1] + p[2] + p[3];
      sum += __shfl_xor_sync(FULL_MASK, sum, 1);
      sum += __shfl_xor_sync(FULL_MASK, sum, 2);
      l[r] = l[r] * alpha + sum;
      m[r] = m_new;
#pragma unroll
      for (int j = 0; j < DTILES; j++) {
        o[j][2 * r] *= alpha;
        o[j][2 * r + 1] *= alpha;
      }
      // P as the A fragment of O += P V (the accumulator layout of two 8-key tiles is the A layout of
      // one 16-key step): int8 and int4 scale each value row, so each probability takes its key's scale.
#if KV_DTYPE == 3
      pm[r] *= alpha;
#endif
#pragma unroll
      for (int n = 0; n < 2; n++) {
        const int key = 8 * n + 2 * t4;
        const float v0 = KV_DTYPE >= 2 ? vs[key * RS] : 1.f, v1 = KV_DTYPE >= 2 ? vs[(key + 1) * RS] : 1.f;
        pa[2 * n + r] = KV_DTYPE == 0 ? pack_bf16x2(p[2 * n], p[2 * n + 1]) : pack_f16x2(p[2 * n] * v0, p[2 * n + 1] * v1);
#if KV_DTYPE == 3
        pm[r] += p[2 * n] * vs[key * 2 + 1] + p[2 * n + 1] * vs[key * 2 + 3];
#endif
      }
    }
    // O += P V over the warp's 16 keys. A 32-dim chunk's transposed ldmatrix gives words of keys
    // 2 t4, 2 t4 + 1 (w[0], w[2]) and 2 t4 + 8, 2 t4 + 9 (w[1], w[3]), each the dim pair 2 g, 2 g + 1
    // of the chunk's first (w[0], w[1]) or second 16 dims: output tiles 4 c .. 4 c + 3 (output_column).
#if KV_DTYPE == 3
    // int4: a 64-dim span's transposed ldmatrix gives words of keys 2 t4, 2 t4 + 1 (w[0]) and
    // 2 t4 + 8, 2 t4 + 9 (w[1]), dims 4 g .. 4 g + 3 of its first 32, w[2] and w[3] of the next;
    // nibble q of each goes to output tile 4 (32-dim chunk) + q (output_column).
#pragma unroll
    for (int c = 0; c < D / 64; c++) {
      unsigned int w[4];
      ldmatrix_x4_trans(w, wv + ((lane & 7) + ((lane >> 3) & 1) * 8) * ROWB + 32 * c + (lane >> 4) * 16);
#pragma unroll
      for (int half = 0; half < 2; half++)
#pragma unroll
        for (int q = 0; q < 4; q++)
          mma_f16_16816(o[8 * c + 4 * half + q], pa, nibbles_to_f16x2(w[2 * half], q), nibbles_to_f16x2(w[2 * half + 1], q));
    }
#elif KV_DTYPE == 0
    // bf16: a 16-dim span's transposed ldmatrix gives keys 2 t4, 2 t4 + 1 (w[0], w[2]) and 2 t4 + 8,
    // 2 t4 + 9 (w[1], w[3]) at dim g of its first (w[0], w[1]) and second 8: output tiles 2 c, 2 c + 1.
#pragma unroll
    for (int c = 0; c < D / 16; c++) {
      unsigned int w[4];
      ldmatrix_x4_trans(w, wv + ((lane & 7) + ((lane >> 3) & 1) * 8) * ROWB + 32 * c + (lane >> 4) * 16);
      mma_bf16_16816(o[2 * c], pa, w[0], w[1]);
      mma_bf16_16816(o[2 * c + 1], pa, w[2], w[3]);
    }
#else
#pragma unroll
    for (int c = 0; c < D / 32; c++) {
      unsigned int w[4];
      ldmatrix_x4_trans(w, wv + ((lane & 7) + ((lane >> 3) & 1) * 8) * ROWB + 32 * c + (lane >> 4) * 16);
#pragma unroll
      for (int h = 0; h < 2; h++) {
        mma_f16_16816(o[4 * c + 2 * h], pa, codes_to_f16x2<KV_DTYPE>(w[2 * h], CODES_02), codes_to_f16x2<KV_DTYPE>(w[2 * h + 1], CODES_02));
        mma_f16_16816(o[4 * c + 2 * h + 1], pa, codes_to_f16x2<KV_DTYPE>(w[2 * h], CODES_13), codes_to_f16x2<KV_DTYPE>(w[2 * h + 1], CODES_13));
      }
    }
#endif
  }
  cp_async_wait<0>();  // only empty groups are left; the stages become the output exchange below

  // Merge the warps: each row's maximum over the warps, each warp's share rescaled to it.
  if (t4 == 0) {
#pragma unroll
    for (int r = 0; r < 2; r++) {
      s_ml[(warp * 16 + g + 8 * r) * 2] = m[r];
      s_ml[(warp * 16 + g + 8 * r) * 2 + 1] = l[r];
    }
  }
  __syncthreads();
  float scale[2];
#pragma unroll
  for (int r = 0; r < 2; r++) {
    const int row = g + 8 * r;
    float top = NEG_INF;
    for (int w = 0; w < WARPS; w++) top = fmaxf(top, s_ml[(w * 16 + row) * 2]);
    scale[r] = m[r] == NEG_INF ? 0.f : fast_exp2(m[r] - top);
  }
  // An fp8 cache's values came as value / 256: their scale, and the 256, go to the output. int4's
  // Σ p · minimum, summed over the row's quad, goes to each of the row's outputs.
  const float v_factor = KV_DTYPE == 1 ? v_scale * 256.f : 1.f;
#if KV_DTYPE == 3
#pragma unroll
  for (int r = 0; r < 2; r++) {
    pm[r] += __shfl_xor_sync(FULL_MASK, pm[r], 1);
    pm[r] += __shfl_xor_sync(FULL_MASK, pm[r], 2);
  }
#endif
#pragma unroll
  for (int j = 0; j < DTILES; j++)
#pragma unroll
    for (int i = 0; i < 4; i++)
      s_out[(warp * 16 + g + 8 * (i >> 1)) * D + output_column(j, 2 * t4 + (i & 1))] =
          (KV_DTYPE == 3 ? o[j][i] + pm[i >> 1] : o[j][i]) * scale[i >> 1] * v_factor;
  __syncthreads();
  for (int i = tid; i < GROUP * D; i += NT) {
    const int h = i / D, c = i - h * D;
    float top = NEG_INF, sum = 0.f, acc = 0.f;
    for (int w = 0; w < WARPS; w++) top = fmaxf(top, s_ml[(w * 16 + h) * 2]);
    for (int w = 0; w < WARPS; w++) {
      const float mw = s_ml[(w * 16 + h) * 2];
      if (mw != NEG_INF) sum += s_ml[(w * 16 + h) * 2 + 1] * fast_exp2(mw - top);
      acc += s_out[(w * 16 + h) * D + c];
    }
    if (split.used == 1) {
#if SINKS
      const float inv = sink_normalizer(top, sum, bf16_to_f32(sinks[kvh * GROUP + h]) * LOG2E);
#else
      const float inv = 1.f / sum;
#endif
      out[(long long)token * num_heads * D + (kvh * GROUP + h) * D + c] = f32_to_bf16(acc * inv);
    } else {
      const long long row = (head0 + h) * num_partitions + part;
      part_acc[row * D + c] = acc;
      if (c == 0) {
        part_ml[row * 2] = top;
        part_ml[row * 2 + 1] = sum;
      }
    }
  }
  merge_if_last();
}
