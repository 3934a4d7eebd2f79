// Quest's key summaries (step/kv-cache-layout.ts `keySummaries`; backend/cpu/ops/key-summaries.ts
// is the CPU twin): per block and kv head, the minimum of each key channel over the block's keys,
// then the maximum, [numBlocks, numKvHeads, 2, headDim] bf16. Run after the step's keys are in the
// cache: for each token whose slot is the last of the step's writes to its block, the block's
// summaries are recomputed from its keys at offsets 0 .. the token's, as the cache holds them
// (KV_DTYPE 2: int8 codes dequantized with their scales; KV_DTYPE 3: int4 codes with their scales
// and minima, as the attention reads them; KV_DTYPE 1: fp8 codes at scale 1, since
// the layer's per-tensor k_scale multiplies every block's bound alike and ranks blocks as the keys
// do). Recomputing instead of updating keeps the kernel free of atomics and deterministic; a decode
// reads at most one block of keys more than it writes. The float minimum rounds down to bf16 and
// the maximum up, so the summaries still bound the keys (exact for bf16 and fp8 caches, whose
// values bf16 holds exactly).
#include "common.cuh"

// nvcc-check: -DKV_DTYPE=0
// nvcc-check: -DKV_DTYPE=1
// nvcc-check: -DKV_DTYPE=2
// nvcc-check: -DKV_DTYPE=3

#if !defined(KV_DTYPE)
#error "compile with -DKV_DTYPE=<0 bf16|1 fp8|2 int8|3 int4>"
#endif

namespace {
// Nearest bf16 at or below / at or above f: truncation moves toward zero, so a negative value
// with bits below the bf16 mantissa goes one step further from zero for the lower bound.
__device__ __forceinline__ bf16 bf16_round_down(float f) {
  const unsigned int u = __float_as_uint(f);
  const bf16 t = (bf16)(u >> 16);
  return (u & 0xffffu) == 0 || !(u & 0x80000000u) ? t : (bf16)(t + 1);
}
__device__ __forceinline__ bf16 bf16_round_up(float f) {
  const unsigned int u = __float_as_uint(f);
  const bf16 t = (bf16)(u >> 16);
  return (u & 0xffffu) == 0 || (u & 0x80000000u) ? t : (bf16)(t + 1);
}
}  // namespace

// grid (numTokens, numKvHeads), block 128: threads over the head's channels. k_scales (int8,
// [slots, numKvHeads]; int4, [slots, numKvHeads, 2]) as the attention kernels take them.
extern "C" __global__ void key_summary_kernel(bf16* __restrict__ summaries, const unsigned char* __restrict__ k_pool,
                                              const float* __restrict__ k_scales, const int* __restrict__ slot_mapping,
                                              int num_tokens, int block_size, int num_kv_heads, int head_dim) {
  PDL_PROLOGUE();
  const int t = blockIdx.x, kvh = blockIdx.y;
  const int slot = slot_mapping[t];
  const int block = slot / block_size;
  if (t + 1 < num_tokens && slot_mapping[t + 1] / block_size == block) return;
  const long long first = (long long)block * block_size;
  bf16* out = summaries + ((long long)block * num_kv_heads + kvh) * 2 * head_dim;
  for (int c = threadIdx.x; c < head_dim; c += blockDim.x) {
    float lo = __int_as_float(0x7f800000), hi = NEG_INF;
    for (long long s = first; s <= slot; s++) {
      const long long at = (s * num_kv_heads + kvh) * head_dim + c;
#if KV_DTYPE == 0
      const float k = bf16_to_f32(reinterpret_cast<const bf16*>(k_pool)[at]);
#elif KV_DTYPE == 1
      const float k = e4m3_over_256(k_pool[at]) * 256.f;
#elif KV_DTYPE == 2
      const float k = (float)(signed char)k_pool[at] * k_scales[s * num_kv_heads + kvh];
#else
      const long long head = s * num_kv_heads + kvh;
      const float k = __fmaf_rn((float)((k_pool[at >> 1] >> (4 * (c & 1))) & 0xfu), k_scales[2 * head], k_scales[2 * head + 1]);
#endif
      lo = fminf(lo, k);
      hi = fmaxf(hi, k);
    }
    out[c] = bf16_round_down(lo);
    out[head_dim + c] = bf16_round_up(hi);
  }
}
