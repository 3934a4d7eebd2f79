// Per-head RMSNorm of the query and key heads (Qwen3's and Gemma 3's q_norm and k_norm) fused with
// their RoPE and the paged KV write: one warp a head, its values held in registers from the norm to
// the cache slot, where head_rms_norm_kernel and then rope_cache_write_kernel took two launches and
// a round trip of every head through memory (about 2 µs of a Qwen3-30B-A3B decode layer's 78).
// Whole-head rotation only (rotary dim = head dim), head dims a multiple of 64: lane l holds dims
// l + 32 j, so each rotate_half pair (d, d + D / 2) lies in one lane. It rounds as the two kernels
// do: each normed value to bf16, then each rotated one. KV_DTYPE=0 writes the bf16 pools (keys
// rotated, values as they are); a quantized cache's write follows in kv_quantize_write_kernel, as
// it follows rope_cache_write_kernel.
#include "common.cuh"

// nvcc-check: -DHEAD_DIM=128 -DKV_DTYPE=0
// nvcc-check: -DHEAD_DIM=64 -DKV_DTYPE=2
// nvcc-check: -DHEAD_DIM=256 -DKV_DTYPE=0
// nvcc-check: -DHEAD_DIM=512 -DKV_DTYPE=3

#if !defined(HEAD_DIM) || !defined(KV_DTYPE)
#error "compile with -DHEAD_DIM=<a multiple of 64, at most 512> -DKV_DTYPE=<0 bf16 | 1 fp8 | 2 int8 | 3 int4>"
#endif

namespace {
constexpr int D = HEAD_DIM;
constexpr int PER = D / 32;    // dims a lane holds
constexpr int HALF = PER / 2;  // the lane's dims in the first half of the head
static_assert(D % 64 == 0 && D <= 512, "head dim a multiple of 64, at most 512");
}  // namespace

// grid (numTokens, ceil((num_heads + 2 num_kv_heads) / warps)), block 32 · warps. Warp w of block y
// takes head y · warps + w of its token's packed qkv row: a query or key head is normed with q_w or
// k_w ([D] bf16) and rotated at the token's rotary row of cos/sin (f32 [rows, D / 2]); with
// KV_DTYPE=0 keys and values go to the token's slot of the pools [slots, num_kv_heads, D].
extern "C" __global__ void rope_norm_cache_write_kernel(bf16* __restrict__ qkv, const float* __restrict__ cos_table,
                                                        const float* __restrict__ sin_table, const int* __restrict__ rotary_rows,
                                                        const int* __restrict__ slots, bf16* __restrict__ k_pool, bf16* __restrict__ v_pool,
                                                        const bf16* __restrict__ q_w, const bf16* __restrict__ k_w, int num_heads,
                                                        int num_kv_heads, float eps) {
  PDL_PROLOGUE();
  const int lane = threadIdx.x & 31;
  const int h = blockIdx.y * (blockDim.x >> 5) + (threadIdx.x >> 5);
  const int total = num_heads + 2 * num_kv_heads;
  if (h >= total) return;
  bf16* head = qkv + ((long long)blockIdx.x * total + h) * D;
#if KV_DTYPE == 0
  const long long slot_at = (long long)slots[blockIdx.x] * num_kv_heads * D;
#endif
  if (h >= num_heads + num_kv_heads) {  // a value head goes to the cache as it is
#if KV_DTYPE == 0
    bf16* v = v_pool + slot_at + (long long)(h - num_heads - num_kv_heads) * D;
#pragma unroll
    for (int j = 0; j < PER; j++) v[lane + 32 * j] = head[lane + 32 * j];
#endif
    return;
  }
  float x[PER];
  float ss = 0.f;
#pragma unroll
  for (int j = 0; j < PER; j++) {
    x[j] = bf16_to_f32(head[lane + 32 * j]);
    ss += x[j] * x[j];
  }
  const float inv = rsqrtf(warp_sum(ss) / D + eps);
  const bf16* w = h < num_heads ? q_w : k_w;
#pragma unroll
  for (int j = 0; j < PER; j++) x[j] = bf16_to_f32(f32_to_bf16(x[j] * inv * bf16_to_f32(w[lane + 32 * j])));
  const long long row_at = (long long)rotary_rows[blockIdx.x] * (D / 2);
  bf16 r[PER];
#pragma unroll
  for (int j = 0; j < HALF; j++) {
    const float c = cos_table[row_at + lane + 32 * j], s = sin_table[row_at + lane + 32 * j];
    r[j] = f32_to_bf16(x[j] * c - x[j + HALF] * s);
    r[j + HALF] = f32_to_bf16(x[j + HALF] * c + x[j] * s);
  }
#pragma unroll
  for (int j = 0; j < PER; j++) head[lane + 32 * j] = r[j];
#if KV_DTYPE == 0
  if (h >= num_heads) {
    bf16* k = k_pool + slot_at + (long long)(h - num_heads) * D;
#pragma unroll
    for (int j = 0; j < PER; j++) k[lane + 32 * j] = r[j];
  }
#endif
}
