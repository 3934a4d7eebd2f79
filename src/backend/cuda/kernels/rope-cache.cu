// RoPE on the query and key heads (in place, HF rotate_half pairing i <-> i + headDim/2), fused
// with the paged KV write of the rotated keys and the values.
#include "common.cuh"

// One block per token. cos/sin are f32 [maxPositions, headDim / 2]; the pools are
// [numBlocks * blockSize slots, numKvHeads, headDim]. Positions and slots were range-checked on the host.
extern "C" __global__ void rope_cache_write_kernel(bf16* __restrict__ qkv, const float* __restrict__ cos_table,
                                                   const float* __restrict__ sin_table,
                                                   const int* __restrict__ positions, const int* __restrict__ slots,
                                                   bf16* __restrict__ k_pool, bf16* __restrict__ v_pool,
                                                   int num_heads, int num_kv_heads, int head_dim) {
  begin_dependent_kernel();
  const int half = head_dim / 2;
  const int kv_width = num_kv_heads * head_dim;
  const int row_width = (num_heads + 2 * num_kv_heads) * head_dim;
  bf16* row = qkv + (long long)blockIdx.x * row_width;
  const float* cos_row = cos_table + (long long)positions[blockIdx.x] * half;
  const float* sin_row = sin_table + (long long)positions[blockIdx.x] * half;
  const long long slot_at = (long long)slots[blockIdx.x] * kv_width;

  for (int item = threadIdx.x; item < (num_heads + num_kv_heads) * half; item += blockDim.x) {
    const int h = item / half, i = item - h * half;
    bf16* head = row + h * head_dim;
    const float x1 = bf16_to_f32(head[i]), x2 = bf16_to_f32(head[i + half]);
    const float c = cos_row[i], s = sin_row[i];
    const bf16 r1 = f32_to_bf16(x1 * c - x2 * s), r2 = f32_to_bf16(x2 * c + x1 * s);
    head[i] = r1;
    head[i + half] = r2;
    if (h >= num_heads) {
      bf16* k = k_pool + slot_at + (h - num_heads) * head_dim;
      k[i] = r1;
      k[i + half] = r2;
    }
  }
  const bf16* v = row + (num_heads + num_kv_heads) * head_dim;
  for (int i = threadIdx.x; i < kv_width; i += blockDim.x) v_pool[slot_at + i] = v[i];
}
