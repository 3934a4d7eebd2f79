// The write of a quantized KV cache: each head of the step's tokens (keys or values of an attention
// layer, already rotated in place by rope_cache_write_kernel; an MLA layer's normalized and rotated
// row) quantized into its slot. KV_DTYPE 1: e4m3(x / tensor_scale); 2: int8 round(x / s) with
// s = max|x| / 127 over the head, stored beside the codes (s = 1 for a head of zeros); 3: int4
// round((x − min) / s) with s = (max − min) / 15 over the head, two codes a byte (element 2i in the
// low nibble), (s, min) stored beside them (s = 1 for a head of equal values). Ties round to even
// and every difference and quotient is a float32 operation, as the CPU twin (kv-codes.ts) computes them.
// (A sparse MLA layer's indexer keys are quantized in their own key write, lightning-indexer.cu.)
#include "common.cuh"

// nvcc-check: -DKV_DTYPE=1
// nvcc-check: -DKV_DTYPE=2
// nvcc-check: -DKV_DTYPE=3

#if !defined(KV_DTYPE) || (KV_DTYPE != 1 && KV_DTYPE != 2 && KV_DTYPE != 3)
#error "compile with -DKV_DTYPE=<1 fp8 e4m3 | 2 int8 | 3 int4>"
#endif

// grid (numTokens, heads), block 32: one warp per head. Head h of token t is `width` bf16 values at
// src + t * src_stride + h * width; its codes go to pool [slots, heads, width] at slot slots[t]
// (int4: width / 2 bytes a head), and its scale to scales [slots, heads] (int8) or its (scale,
// minimum) to scales [slots, heads, 2] (int4). Slots were range-checked on the host.
extern "C" __global__ void kv_quantize_write_kernel(const bf16* __restrict__ src, int src_stride, const int* __restrict__ slots,
                                                    unsigned char* __restrict__ pool, float* __restrict__ scales, int heads,
                                                    int width, float tensor_scale) {
  PDL_PROLOGUE();
  const int t = blockIdx.x, h = blockIdx.y, lane = threadIdx.x;
  const bf16* x = src + (long long)t * src_stride + (long long)h * width;
  const long long head = (long long)slots[t] * heads + h;
#if KV_DTYPE == 3
  float lo = -NEG_INF, hi = NEG_INF;
  for (int i = lane; i < width; i += 32) {
    const float v = bf16_to_f32(x[i]);
    lo = fminf(lo, v);
    hi = fmaxf(hi, v);
  }
  lo = -warp_max(-lo);
  hi = warp_max(hi);
  const float s = int4_scale(lo, hi);
  if (lane == 0) {
    scales[2 * head] = s;
    scales[2 * head + 1] = lo;
  }
  unsigned char* codes = pool + head * (width / 2);
  for (int i = lane; i < width / 2; i += 32) {
    codes[i] = (unsigned char)(int4_encode(bf16_to_f32(x[2 * i]), lo, s) | (int4_encode(bf16_to_f32(x[2 * i + 1]), lo, s) << 4));
  }
#else
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
#endif
}
