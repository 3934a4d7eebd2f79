// The write of an 8-bit KV cache: each head of the step's tokens (keys or values of an attention
// layer, already rotated in place by rope_cache_write_kernel; an MLA layer's normalized and rotated
// row; a sparse MLA layer's indexer key) quantized into its slot. KV_DTYPE 1: e4m3(x / s) with
// s = tensor_scale, or, given `scales`, s = max|x| / 448 over the head, stored beside the codes;
// 2: int8 round(x / s) with s = max|x| / 127 over the head, stored beside the codes (s = 1 for a
// head of zeros). Ties round to even and every quotient is a float32 division, as the CPU twin
// (kv-codes.ts) computes them.
#include "common.cuh"

// nvcc-check: -DKV_DTYPE=1
// nvcc-check: -DKV_DTYPE=2

#if !defined(KV_DTYPE) || (KV_DTYPE != 1 && KV_DTYPE != 2)
#error "compile with -DKV_DTYPE=<1 fp8 e4m3 | 2 int8>"
#endif

// grid (numTokens, heads), block 32: one warp per head. Head h of token t is `width` bf16 values at
// src + t * src_stride + h * width; its codes go to pool [slots, heads, width] at slot slots[t],
// and (int8, or fp8 given `scales`) its scale to scales [slots, heads]. Slots were range-checked on
// the host.
extern "C" __global__ void kv_quantize_write_kernel(const bf16* __restrict__ src, int src_stride, const int* __restrict__ slots,
                                                    unsigned char* __restrict__ pool, float* __restrict__ scales, int heads,
                                                    int width, float tensor_scale) {
  PDL_PROLOGUE();
  const int t = blockIdx.x, h = blockIdx.y, lane = threadIdx.x;
  const bf16* x = src + (long long)t * src_stride + (long long)h * width;
  const long long head = (long long)slots[t] * heads + h;
  unsigned char* codes = pool + head * width;
  float s = tensor_scale;
  if (KV_DTYPE == 2 || scales != nullptr) {
    float amax = 0.f;
    for (int i = lane; i < width; i += 32) amax = fmaxf(amax, fabsf(bf16_to_f32(x[i])));
    amax = warp_max(amax);
    s = amax == 0.f ? 1.f : amax / (KV_DTYPE == 1 ? 448.f : 127.f);
    if (lane == 0) scales[head] = s;
  }
  for (int i = lane; i < width; i += 32) {
#if KV_DTYPE == 1
    codes[i] = (unsigned char)f32_to_e4m3(bf16_to_f32(x[i]) / s);
#else
    codes[i] = (unsigned char)(signed char)max(-127, min(127, __float2int_rn(bf16_to_f32(x[i]) / s)));
#endif
  }
}
