// The write of an 8-bit KV cache: each head of the step's tokens (keys or values of an attention
// layer, already rotated in place by rope_cache_write_kernel; an MLA layer's normalized and rotated
// row) quantized into its slot. KV_DTYPE 1: e4m3(x / tensor_scale); 2: int8 round(x / s) with
// s = max|x| / 127 over the head, stored beside the codes (s = 1 for a head of zeros). Ties round
// to even and every quotient is a float32 division, as the CPU twin (kv-codes.ts) computes them.
// (A sparse MLA layer's indexer keys are quantized in their own key write, lightning-indexer.cu.)
#include "common.cuh"

// nvcc-check: -DKV_DTYPE=1
// nvcc-check: -DKV_DTYPE=2

#if !defined(KV_DTYPE) || (KV_DTYPE != 1 && KV_DTYPE != 2)
#error "compile with -DKV_DTYPE=<1 fp8 e4m3 | 2 int8>"
#endif

// grid (numTokens, heads), block 32: one warp per head. Head h of token t is `width` bf16 values at
// src + t * src_stride + h * width; its codes go to pool [slots, heads, width] at slot slots[t],
// and (int8) its scale to scales [slots, heads]. Slots were range-checked on the host.
extern "C" __global__ void kv_quantize_write_kernel(const bf16* __restrict__ src, int src_stride, const int* __restrict__ slots,
                                                    unsigned char* __restrict__ pool, float* __restrict__ scales, int heads,
                                                    int width, float tensor_scale) {
  PDL_PROLOGUE();
  const int t = blockIdx.x, h = blockIdx.y, lane = threadIdx.x;
  const bf16* x = src + (long long)t * src_stride + (long long)h * width;
  const long long head = (long long)slots[t] * heads + h;
  unsigned char* codes = pool + head * width;
  float s = tensor_scale;
  if (KV_DTYPE == 2) {
    float amax = 0.f;
    for (int i = lane; i < width; i += 32) amax = fmaxf(amax, fabsf(bf16_to_f32(x[i])));
    amax = warp_max(amax);
    s = kv_head_scale<KV_DTYPE>(amax);
    if (lane == 0) scales[head] = s;
  }
  for (int i = lane; i < width; i += 32) codes[i] = kv_encode<KV_DTYPE>(bf16_to_f32(x[i]), s);
}
