// MXFP4 weights (src/tensor/mxfp4.ts): blocks of 32 E2M1 codes in 16 bytes, the even column in
// a byte's low nibble, and one E8M0 scale code per block, value 2^(code - 127).
#pragma once
#include "common.cuh"

// An E2M1 code's value times 2^-14, exactly: its exponent and mantissa bits (2 and 1) moved to
// the bottom of a half's exponent and the top of its mantissa make a half whose normal and
// subnormal cases are E2M1's, scaled by 2^(1 - 15); its sign goes to the half's sign.
__device__ __forceinline__ float fp4_e2m1_value_2m14(unsigned int q) {
  return f16_to_f32((unsigned short)(((q & 7u) << 9) | ((q & 8u) << 12)));
}

// A block's scale times 2^14, undoing the decoding's 2^-14: 2^(code - 113) as float bits.
// Finite for codes up to 240 (MXFP4_MAX_SCALE_CODE, checked at load).
__device__ __forceinline__ float mxfp4_scale_2p14(unsigned int code) { return __uint_as_float((code + 14u) << 23); }

// The 32 values of one block (16 bytes) times 2^-14, in column order.
__device__ __forceinline__ void mxfp4_decode32(const uint4 v, float* w) {
  const unsigned int words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int n = 0; n < 8; n++) w[8 * i + n] = fp4_e2m1_value_2m14(words[i] >> (4 * n));
}

// The 32 values of one block, times its scale, as 16 bf16 pairs (exact: a power of two times an
// E2M1 value is a bf16 unless it leaves bf16's exponent range).
__device__ __forceinline__ void mxfp4_block_to_bf16(const uint4 v, unsigned int scale_code, uint4* out) {
  float w[32];
  mxfp4_decode32(v, w);
  const float s = mxfp4_scale_2p14(scale_code);
#pragma unroll
  for (int i = 0; i < 32; i++) w[i] *= s;
#pragma unroll
  for (int c = 0; c < 4; c++) out[c] = pack8(w + 8 * c);
}
