// DeepSeek-V3.2's lightning indexer (layers/lightning-indexer.ts): the per-token key write, and
// each token's top-k positions by index score. CPU twins: backend/cpu/ops/lightning-indexer.ts.
// The keys are cached in the rows' dtype: bf16, or with an 8-bit cache (KV_DTYPE 1 fp8, 2 int8)
// codes with a float32 scale per key (max|k| / 448 or / 127), quantized from the key's float32
// values in the key write, as the CPU twin quantizes its float32 keys.
#include "common.cuh"

// nvcc-check: -DINDEX_HEADS=16 -DKV_DTYPE=0
// nvcc-check: -DINDEX_HEADS=64 -DKV_DTYPE=0
// nvcc-check: -DINDEX_HEADS=64 -DKV_DTYPE=1
// nvcc-check: -DINDEX_HEADS=16 -DKV_DTYPE=2

#if !defined(INDEX_HEADS) || !defined(KV_DTYPE)
#error "compile with -DINDEX_HEADS=<index_n_heads> -DKV_DTYPE=<0 bf16 | 1 fp8 | 2 int8>"
#endif

// One block per token. k [numTokens, head_dim] is LayerNorm-ed (f32 mean and variance, eps, then
// × norm_w + norm_b) and its leading `rope` dims rotated (rotate_half pairs i, i + rope / 2) by the
// token's rotary row, all in float32, then written back in place rounded to bf16. The cache gets
// the key at slots[t]: bf16 `keys` [slots, head_dim], or (8-bit) codes of the float32 key at the
// scale kv_head_scale of its max|k|, that scale in key_scales[slots[t]] (unread for bf16). No bf16
// rounding comes before the quantization: a 2^-9 change to a value moves its code one step when it
// sits near a midpoint, and the CPU twin quantizes unrounded values. The leading `rope` dims of each
// of q's INDEX_HEADS heads ([numTokens, INDEX_HEADS * head_dim]) are rotated in place. head_dim <=
// 1024; rotary rows and slots were range-checked on the host.
extern "C" __global__ void indexer_key_write_kernel(bf16* __restrict__ q, bf16* __restrict__ k, const bf16* __restrict__ norm_w,
                                                    const bf16* __restrict__ norm_b, const float* __restrict__ cos_table,
                                                    const float* __restrict__ sin_table, const int* __restrict__ rotary_rows,
                                                    const int* __restrict__ slots, unsigned char* __restrict__ keys,
                                                    float* __restrict__ key_scales, int head_dim, int rope, float eps) {
  PDL_PROLOGUE();
  __shared__ float normed[1024];
  __shared__ float rotated[1024];
  const int t = blockIdx.x;
  bf16* key = k + (long long)t * head_dim;
  float sum = 0.f;
  for (int i = threadIdx.x; i < head_dim; i += blockDim.x) {
    normed[i] = bf16_to_f32(key[i]);
    sum += normed[i];
  }
  const float mean = block_sum(sum) / head_dim;
  float squares = 0.f;
  for (int i = threadIdx.x; i < head_dim; i += blockDim.x) squares += (normed[i] - mean) * (normed[i] - mean);
  const float inv = rsqrtf(block_sum(squares) / head_dim + eps);
  // Each thread normalizes the elements it loaded; the barrier below publishes them to the pairs' other thread.
  for (int i = threadIdx.x; i < head_dim; i += blockDim.x) normed[i] = (normed[i] - mean) * inv * bf16_to_f32(norm_w[i]) + bf16_to_f32(norm_b[i]);
  __syncthreads();
  const int half = rope / 2;
  const long long table_at = (long long)rotary_rows[t] * half;
  const long long slot = slots[t];
  // Each thread keeps the rotated elements it computes in `rotated` and reads back only those.
  float amax = 0.f;
  for (int i = threadIdx.x; i < head_dim; i += blockDim.x) {
    float v = normed[i];
    if (i < rope) {
      const int j = i < half ? i : i - half;
      const float c = cos_table[table_at + j], s = sin_table[table_at + j];
      v = i < half ? normed[i] * c - normed[i + half] * s : normed[i] * c + normed[i - half] * s;
    }
    rotated[i] = v;
    amax = fmaxf(amax, fabsf(v));
    const bf16 out = f32_to_bf16(v);
    key[i] = out;
    if (KV_DTYPE == 0) reinterpret_cast<bf16*>(keys)[slot * head_dim + i] = out;
  }
  if (KV_DTYPE != 0) {
    const float scale = kv_head_scale<KV_DTYPE>(block_max(amax));
    if (threadIdx.x == 0) key_scales[slot] = scale;
    for (int i = threadIdx.x; i < head_dim; i += blockDim.x) keys[slot * head_dim + i] = kv_encode<KV_DTYPE>(rotated[i], scale);
  }
  for (int i = threadIdx.x; i < INDEX_HEADS * half; i += blockDim.x) {
    const int h = i / half, j = i - h * half;
    bf16* x = q + ((long long)t * INDEX_HEADS + h) * head_dim;
    const float x1 = bf16_to_f32(x[j]), x2 = bf16_to_f32(x[j + half]);
    const float c = cos_table[table_at + j], s = sin_table[table_at + j];
    x[j] = f32_to_bf16(x1 * c - x2 * s);
    x[j + half] = f32_to_bf16(x2 * c + x1 * s);
  }
}

// A float's order as an unsigned key: larger floats, larger keys (+0 and -0 made equal first).
__device__ __forceinline__ unsigned int order_key(float f) {
  const unsigned int bits = __float_as_uint(f + 0.f);
  return (bits & 0x80000000u) ? ~bits : bits | 0x80000000u;
}

// Exclusive prefix sum of `flag` over the block (blockDim.x a multiple of 32, at most 1024), in
// thread order; `total` receives the block's sum.
__device__ __forceinline__ int block_exclusive_scan(int flag, int* total) {
  __shared__ int warp_totals[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  int inclusive = flag;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int other = __shfl_up_sync(FULL_MASK, inclusive, o);
    if (lane >= o) inclusive += other;
  }
  __syncthreads();  // warp_totals may still be read by a previous call
  if (lane == 31) warp_totals[warp] = inclusive;
  __syncthreads();
  int before = 0, all = 0;
  for (int w = 0; w < warps; w++) {
    if (w < warp) before += warp_totals[w];
    all += warp_totals[w];
  }
  *total = all;
  return before + inclusive - flag;
}

// One block per token (token first_token + blockIdx.x): its index scores over positions 0 .. p of its sequence, then the top_k
// best, written to out [numTokens, top_k] in increasing position, -1 past them.
//   score_j = Σ_h weight_scale · weights[t, h] · relu(scale · q[t, h] · key_j)
// q bf16 [numTokens, INDEX_HEADS * head_dim] (rotated), weights f32 [numTokens, INDEX_HEADS], keys
// [slots, head_dim] read through the sequence's block table: bf16, or 8-bit codes whose scale
// key_scales[slot] is positive, so it leaves relu's sign alone and multiplies each head's product once. The scores go to the block's row
// of `scores` (f32, `score_stride` per block), then the k-th largest is found by a radix select over
// their order keys (8 bits a pass, most significant first), and the positions scoring above it,
// plus the earliest of those scoring equal to it, are written in order. A token that sees no more
// than top_k positions takes them all. head_dim is a multiple of 8 and INDEX_HEADS * head_dim <= 8192.
extern "C" __global__ void indexer_topk_kernel(const bf16* __restrict__ q, const float* __restrict__ weights,
                                               const unsigned char* __restrict__ keys, const float* __restrict__ key_scales,
                                               const int* __restrict__ query_start_loc,
                                               const int* __restrict__ positions, const int* __restrict__ block_tables,
                                               int num_seqs, int max_blocks_per_seq, int block_size, int head_dim, int top_k,
                                               float scale, float weight_scale, float* __restrict__ scores, long long score_stride,
                                               int first_token, int* __restrict__ out) {
  PDL_PROLOGUE();
  __shared__ float q_s[8192];
  __shared__ float w_s[INDEX_HEADS];
  __shared__ unsigned int histogram[256];
  __shared__ unsigned int prefix_s, remaining_s;
  const int t = first_token + blockIdx.x;
  int* chosen = out + (long long)t * top_k;
  const int visible = positions[t] + 1;
  if (visible <= top_k) {
    for (int i = threadIdx.x; i < top_k; i += blockDim.x) chosen[i] = i < visible ? i : -1;
    return;
  }
  int seq = 0;
  while (seq + 1 < num_seqs && query_start_loc[seq + 1] <= t) seq++;
  const int* table = block_tables + (long long)seq * max_blocks_per_seq;
  for (int i = threadIdx.x; i < INDEX_HEADS * head_dim; i += blockDim.x) q_s[i] = bf16_to_f32(q[(long long)t * INDEX_HEADS * head_dim + i]);
  for (int h = threadIdx.x; h < INDEX_HEADS; h += blockDim.x) w_s[h] = weight_scale * weights[(long long)t * INDEX_HEADS + h];
  __syncthreads();
  float* row = scores + blockIdx.x * score_stride;
  for (int j = threadIdx.x; j < visible; j += blockDim.x) {
    const long long slot = kv_slot(table, j, block_size);
    float dot[INDEX_HEADS];
#pragma unroll
    for (int h = 0; h < INDEX_HEADS; h++) dot[h] = 0.f;
    for (int c = 0; c < head_dim / 8; c++) {
      float kv[8];
#if KV_DTYPE == 0
      unpack8(reinterpret_cast<const uint4*>(keys + slot * head_dim * 2)[c], kv);
#else
      const uint2 codes = reinterpret_cast<const uint2*>(keys + slot * head_dim)[c];
#pragma unroll
      for (int i = 0; i < 8; i++) kv[i] = code_value<KV_DTYPE>(((i < 4 ? codes.x : codes.y) >> (8 * (i & 3))) & 0xffu);
#endif
#pragma unroll
      for (int h = 0; h < INDEX_HEADS; h++) {
#pragma unroll
        for (int i = 0; i < 8; i++) dot[h] += q_s[h * head_dim + c * 8 + i] * kv[i];
      }
    }
    const float key_scale = scale * (KV_DTYPE == 0 ? 1.f : key_scales[slot]);
    float score = 0.f;
#pragma unroll
    for (int h = 0; h < INDEX_HEADS; h++) score += w_s[h] * fmaxf(0.f, key_scale * dot[h]);
    row[j] = score;
  }
  // Radix select: after the pass on bits [shift, shift + 8), prefix_s holds the k-th largest key's
  // bits from `shift` up, and remaining_s how many keys with that prefix are still to be taken.
  if (threadIdx.x == 0) {
    prefix_s = 0;
    remaining_s = top_k;
  }
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < 256; b += blockDim.x) histogram[b] = 0;
    __syncthreads();
    const unsigned int prefix = prefix_s;
    const unsigned int high_mask = shift == 24 ? 0u : ~0u << (shift + 8);
    for (int j = threadIdx.x; j < visible; j += blockDim.x) {
      const unsigned int key = order_key(row[j]);
      if ((key & high_mask) == prefix) atomicAdd(&histogram[(key >> shift) & 255u], 1u);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      unsigned int remaining = remaining_s;
      int b = 255;
      while (histogram[b] < remaining) remaining -= histogram[b--];
      prefix_s = prefix | ((unsigned int)b << shift);
      remaining_s = remaining;
    }
    __syncthreads();
  }
  const unsigned int kth = prefix_s;
  const int equal_taken = (int)remaining_s;
  // Ordered compaction: tiles of blockDim positions, each thread's flag placed by a block scan.
  int written = 0, equal_seen = 0;
  for (int base = 0; base < visible; base += blockDim.x) {
    const int j = base + threadIdx.x;
    const unsigned int key = j < visible ? order_key(row[j]) : 0u;
    int equal_total;
    const int equal_before = block_exclusive_scan(j < visible && key == kth, &equal_total);
    const int take = j < visible && (key > kth || (key == kth && equal_seen + equal_before < equal_taken));
    int taken_total;
    const int at = block_exclusive_scan(take, &taken_total);
    if (take) chosen[written + at] = j;
    written += taken_total;
    equal_seen += equal_total;
  }
}
