// DeepSeek-V3.2's sparse MLA (DeepSeek Sparse Attention): absorbed multi-head latent attention of
// each token over only the cached rows its indexer selected (lightning-indexer.cu), decode and
// prefill alike. CPU twin: mlaAttention with a selection (backend/cpu/ops/mla.ts).
#include "common.cuh"

// nvcc-check: -DKV_DTYPE=0
// nvcc-check: -DKV_DTYPE=1
// nvcc-check: -DKV_DTYPE=2

#ifndef KV_DTYPE
#error "compile with -DKV_DTYPE=<0 bf16 | 1 fp8 | 2 int8>"
#endif

// Latent values each lane accumulates: latent dims up to 32 * LATENT_PER_LANE.
#define LATENT_PER_LANE 16
#define ROPE_PER_LANE 2

// Value i of a cached row: bf16, or an 8-bit code times the row's scale in f32 (the value the CPU
// twin reads; dense MLA's kernels round it to bf16 for their tensor cores, this kernel has none).
__device__ __forceinline__ float row_value(const unsigned char* row, int i, float s) {
#if KV_DTYPE == 0
  return bf16_to_f32(reinterpret_cast<const bf16*>(row)[i]);
#else
  return code_value<KV_DTYPE>(row[i]) * s;
#endif
}

// Grid (numTokens, ceil(num_heads / HEADS_PER_BLOCK)), HEADS_PER_BLOCK (4) warps a block: warp w takes
// head blockIdx.y * HEADS_PER_BLOCK + w of token blockIdx.x. For each of the token's selected
// positions (selection [numTokens, top_k], -1 for none) it gathers the cached row [latent | rope]
// ([slots, latent + rope] bf16, or 8-bit codes with KV_DTYPE 1 (fp8, scale row_scale) or 2 (int8,
// scale row_scales[slot]), through the token's sequence's block table) and scores it as
// scale · (q_latent · latent_j + q_rope · rope_j), one warp sum per row, with an online softmax in
// f32; the lanes keep latent dims lane, lane + 32, ... of Σ_j p_j latent_j. out [numTokens,
// num_heads * latent] bf16. latent is a multiple of 32 up to 512, rope a multiple of 8 up to 64;
// q [numTokens, num_heads * (nope + rope)], q_latent [numTokens, num_heads * latent].
#define HEADS_PER_BLOCK 4
extern "C" __global__ void __launch_bounds__(128) sparse_mla_kernel(
    bf16* __restrict__ out, const bf16* __restrict__ q_latent, const bf16* __restrict__ q, const unsigned char* __restrict__ pool,
    const int* __restrict__ selection, const int* __restrict__ query_start_loc, const int* __restrict__ block_tables, int num_seqs,
    int max_blocks_per_seq, int block_size, int top_k, int num_heads, int nope, int latent, int rope, float scale,
    const float* __restrict__ row_scales, float row_scale) {
  PDL_PROLOGUE();
  const int t = blockIdx.x;
  const int lane = threadIdx.x & 31;
  const int head = blockIdx.y * HEADS_PER_BLOCK + (threadIdx.x >> 5);
  if (head >= num_heads) return;
  int seq = 0;
  while (seq + 1 < num_seqs && query_start_loc[seq + 1] <= t) seq++;
  const int* table = block_tables + (long long)seq * max_blocks_per_seq;
  const int lanes_latent = latent / 32;
  const long long row_bytes = (long long)(latent + rope) * (KV_DTYPE == 0 ? 2 : 1);
  const bf16* ql = q_latent + ((long long)t * num_heads + head) * latent;
  const bf16* qr = q + ((long long)t * num_heads + head) * (nope + rope) + nope;
  float q_lat[LATENT_PER_LANE], q_rope[ROPE_PER_LANE], acc[LATENT_PER_LANE];
#pragma unroll
  for (int i = 0; i < LATENT_PER_LANE; i++) {
    q_lat[i] = i < lanes_latent ? bf16_to_f32(ql[lane + 32 * i]) : 0.f;
    acc[i] = 0.f;
  }
#pragma unroll
  for (int i = 0; i < ROPE_PER_LANE; i++) q_rope[i] = lane + 32 * i < rope ? bf16_to_f32(qr[lane + 32 * i]) : 0.f;
  float m = NEG_INF, l = 0.f;
  const int* chosen = selection + (long long)t * top_k;
  for (int i = 0; i < top_k; i++) {
    const int j = chosen[i];
    if (j < 0) continue;
    const long long slot = kv_slot(table, j, block_size);
    const unsigned char* row = pool + slot * row_bytes;
    const float s = KV_DTYPE == 2 ? row_scales[slot] : row_scale;
    float v[LATENT_PER_LANE];
    float partial = 0.f;
#pragma unroll
    for (int c = 0; c < LATENT_PER_LANE; c++) {
      v[c] = c < lanes_latent ? row_value(row, lane + 32 * c, s) : 0.f;
      partial += q_lat[c] * v[c];
    }
#pragma unroll
    for (int c = 0; c < ROPE_PER_LANE; c++) {
      if (lane + 32 * c < rope) partial += q_rope[c] * row_value(row, latent + lane + 32 * c, s);
    }
    const float score = warp_sum(partial) * scale;
    const float m_new = fmaxf(m, score);
    const float correction = expf(m - m_new);
    const float p = expf(score - m_new);
    l = l * correction + p;
#pragma unroll
    for (int c = 0; c < LATENT_PER_LANE; c++) acc[c] = acc[c] * correction + p * v[c];
    m = m_new;
  }
  bf16* o = out + ((long long)t * num_heads + head) * latent;
  const float inv = l > 0.f ? 1.f / l : 0.f;
#pragma unroll
  for (int c = 0; c < LATENT_PER_LANE; c++) {
    if (c < lanes_latent) o[lane + 32 * c] = f32_to_bf16(acc[c] * inv);
  }
}
