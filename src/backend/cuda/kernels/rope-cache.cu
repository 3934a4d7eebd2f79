// RoPE on the query and key heads (in place, HF rotate_half pairing i <-> i + rotaryDim/2 within
// each head's leading rotaryDim dimensions), fused with the paged KV write of the rotated keys and
// the values. PARTIAL_ROTARY=1 when rotaryDim < headDim (Phi-4-mini): the keys' trailing,
// unrotated dimensions are copied to the cache as they are; whole-head rotation compiles without it.
// Heads from first_head on rotate: 0, or num_heads to leave the queries unrotated (StreamingLLM
// rotates them at attention). KV_DTYPE=0 writes the bf16 pools here; with an 8-bit cache
// (KV_DTYPE 1 or 2) this kernel only rotates, and kv_quantize_write_kernel then writes the keys
// and values from qkv (the pool arguments are unread).
#include "common.cuh"

// nvcc-check: -DPARTIAL_ROTARY=0 -DKV_DTYPE=0
// nvcc-check: -DPARTIAL_ROTARY=1 -DKV_DTYPE=0
// nvcc-check: -DPARTIAL_ROTARY=1 -DKV_DTYPE=2

#if !defined(PARTIAL_ROTARY) || !defined(KV_DTYPE)
#error "compile with -DPARTIAL_ROTARY=<1 if rotary dim < head dim, else 0> -DKV_DTYPE=<0 bf16 | 1 fp8 | 2 int8>"
#endif

// grid (numTokens, ceil(max(items, kvWidth) / blockDim.x)): each thread rotates one (head, i) pair
// of its token and copies one value element (and, with PARTIAL_ROTARY, one key element past the
// rotary dims), so a decode step of one token spreads over many blocks instead of looping in one.
// cos/sin are f32 [table rows, rotaryDim / 2], read at each token's rotary row; the pools are
// [numBlocks * blockSize slots, numKvHeads, headDim]. Rows and slots were range-checked on the host.
extern "C" __global__ void rope_cache_write_kernel(bf16* __restrict__ qkv, const float* __restrict__ cos_table,
                                                   const float* __restrict__ sin_table,
                                                   const int* __restrict__ rotary_rows, const int* __restrict__ slots,
                                                   bf16* __restrict__ k_pool, bf16* __restrict__ v_pool,
                                                   int num_heads, int num_kv_heads, int head_dim, int rotary_dim,
                                                   int first_head) {
  PDL_PROLOGUE();
  const int half = rotary_dim / 2;
  const int kv_width = num_kv_heads * head_dim;
  const int row_width = (num_heads + 2 * num_kv_heads) * head_dim;
  bf16* row = qkv + (long long)blockIdx.x * row_width;
  const long long slot_at = (long long)slots[blockIdx.x] * kv_width;
  const int item = blockIdx.y * blockDim.x + threadIdx.x;

  if (item < (num_heads + num_kv_heads - first_head) * half) {
    const int h = first_head + item / half, i = item % half;
    const long long at = (long long)rotary_rows[blockIdx.x] * half + i;
    bf16* head = row + h * head_dim;
    const float x1 = bf16_to_f32(head[i]), x2 = bf16_to_f32(head[i + half]);
    const float c = cos_table[at], s = sin_table[at];
    const bf16 r1 = f32_to_bf16(x1 * c - x2 * s), r2 = f32_to_bf16(x2 * c + x1 * s);
    head[i] = r1;
    head[i + half] = r2;
    if (KV_DTYPE == 0 && h >= num_heads) {
      bf16* k = k_pool + slot_at + (h - num_heads) * head_dim;
      k[i] = r1;
      k[i + half] = r2;
    }
  }
#if KV_DTYPE == 0
  if (item < kv_width) {
    v_pool[slot_at + item] = row[(num_heads + num_kv_heads) * head_dim + item];
#if PARTIAL_ROTARY
    if (item % head_dim >= rotary_dim) k_pool[slot_at + item] = row[num_heads * head_dim + item];
#endif
  }
#endif
}
