// MLA's cache write (layers/mla-attention.ts): the shared key row's latent is RMS-normalized and
// its rotary part rotated, the queries' rotary parts rotated, and the row written to the paged pool,
// in one kernel. With an 8-bit cache (KV_DTYPE 1 or 2) the row is only normalized and rotated in
// place here, and kv_quantize_write_kernel then writes it to the pool (`pool` is unread).
#include "attention-span.cuh"
#include "common.cuh"

// nvcc-check: -DKV_DTYPE=0
// nvcc-check: -DKV_DTYPE=1

#ifndef KV_DTYPE
#error "compile with -DKV_DTYPE=<0 bf16 | 1 fp8 | 2 int8>"
#endif

// One block per token (blockDim a multiple of 32). kv [numTokens, latent + rope]: the latent is
// RMS-normalized by norm_w and the rotary part rotated (rotate_half pairs i, i + rope / 2), in
// place, and the row is written to pool row slots[t]; the rotary part of each of q's heads
// (q [numTokens, num_heads * q_width], head h's at h * q_width + nope) is rotated in place. cos/sin
// are f32 [rows, rope / 2], read at each token's rotary row. latent and rope are multiples of 8;
// rotary rows and slots were range-checked on the host. temp_floor / temp_scale / temp_offset
// (attention-span.cuh; temp_floor 0: none) then scale every value of the token's queries, nope and
// rotated rope parts, by the temperature of its position (Mistral 4), each rounded to bf16 once.
extern "C" __global__ void mla_rope_cache_write_kernel(bf16* __restrict__ q, bf16* __restrict__ kv, const bf16* __restrict__ norm_w,
                                                       const float* __restrict__ cos_table, const float* __restrict__ sin_table,
                                                       const int* __restrict__ rotary_rows, const int* __restrict__ positions,
                                                       const int* __restrict__ slots, bf16* __restrict__ pool, int num_heads,
                                                       int q_width, int nope, int latent, int rope, float eps, float temp_floor,
                                                       float temp_scale, int temp_offset) {
  PDL_PROLOGUE();
  const int t = blockIdx.x;
  const float q_factor = query_temperature(positions[t], temp_floor, temp_scale, temp_offset);
  const int width = latent + rope;
  uint4* row = reinterpret_cast<uint4*>(kv + (long long)t * width);
  bf16* slot_row = pool + (long long)slots[t] * width;
  const uint4* w = reinterpret_cast<const uint4*>(norm_w);
  const int chunks = latent / 8;
  float ss = 0.f;
  for (int c = threadIdx.x; c < chunks; c += blockDim.x) {
    float v[8];
    unpack8(row[c], v);
#pragma unroll
    for (int i = 0; i < 8; i++) ss += v[i] * v[i];
  }
  const float inv = rsqrtf(block_sum(ss) / latent + eps);
  // Each thread rewrites only the chunks it read above, and block_sum's barriers ordered every read first.
  for (int c = threadIdx.x; c < chunks; c += blockDim.x) {
    float v[8], gain[8];
    unpack8(row[c], v);
    unpack8(w[c], gain);
#pragma unroll
    for (int i = 0; i < 8; i++) v[i] = v[i] * inv * gain[i];
    const uint4 packed = pack8(v);
    row[c] = packed;
    if (KV_DTYPE == 0) reinterpret_cast<uint4*>(slot_row)[c] = packed;
  }
  const int half = rope / 2;
  const long long table_at = (long long)rotary_rows[t] * half;
  for (int i = threadIdx.x; i < (num_heads + 1) * half; i += blockDim.x) {
    const int h = i / half, j = i - h * half;
    // Heads 0 .. num_heads - 1 are the queries'; head num_heads is the shared key's.
    bf16* x = h < num_heads ? q + ((long long)t * num_heads + h) * q_width + nope : kv + (long long)t * width + latent;
    const float x1 = bf16_to_f32(x[j]), x2 = bf16_to_f32(x[j + half]);
    const float c = cos_table[table_at + j], s = sin_table[table_at + j];
    const float f = h < num_heads ? q_factor : 1.f;
    const bf16 r1 = f32_to_bf16((x1 * c - x2 * s) * f), r2 = f32_to_bf16((x2 * c + x1 * s) * f);
    x[j] = r1;
    x[j + half] = r2;
    if (KV_DTYPE == 0 && h == num_heads) {
      slot_row[latent + j] = r1;
      slot_row[latent + j + half] = r2;
    }
  }
  if (temp_floor > 0.f) {
    for (int i = threadIdx.x; i < num_heads * nope; i += blockDim.x) {
      bf16* x = q + ((long long)t * num_heads + i / nope) * q_width + i % nope;
      *x = f32_to_bf16(bf16_to_f32(*x) * q_factor);
    }
  }
}
