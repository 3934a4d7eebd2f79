// Keel's quantized layout (quantized-linear.cu) re-laid at load for marlin-gemm.cu, and back to
// bf16 for batches past the GEMM's rows. FORMAT 0 int4 (4-bit codes), else 8-bit codes (int8,
// fp8 e4m3: the same bytes). W [n, k], n a multiple of 16, k of 64.
//
// Codes: W is cut into strips of 16 rows; a strip's codes are 16-byte units along k, 32 lanes
// each (int4: 64 columns a unit, 8-bit: 32), unit u of strip i at word ((i · units + u) · 32 +
// lane) · 4. Lane l (g = l / 4, t = l % 4) gets the B fragments of mma.sync m16n8k16 for k steps
// of 16 columns kb: rows 16 i + g (tile 0) and 16 i + 8 + g (tile 1), columns kb + 2t, kb + 2t + 1
// (register b0) and kb + 2t + 8, kb + 2t + 9 (b1).
// - int4: word c of a unit is k step 4u + c; its nibble slot s holds pair p = s % 4 (tile p / 2,
//   register p % 2), column + s / 4: so (word >> 4p) & 0x000f000f is register p's two codes,
//   each in the low bits of a 16-bit half.
// - 8-bit: word c of a unit is k step 2u + c / 2, tile c % 2; its byte b is register b / 2,
//   column + b % 2.
// Scales (f32) and zeros (u8) [n, groups] become [n / 16, groups, 16]: a strip's 16 rows of one
// group contiguous.
#include "common.cuh"

// nvcc-check: -DFORMAT=0
// nvcc-check: -DFORMAT=1

#ifndef FORMAT
#define FORMAT 0
#endif

// Row and column of W that code `slot` (int4 nibble, 8-bit byte) of fragment word `word` holds.
__device__ __forceinline__ void fragment_position(long long word, int slot, int k, int& row, int& col) {
  const int c = (int)(word & 3), lane = (int)((word >> 2) & 31);
  const long long unit = word >> 7;
  const int g = lane >> 2, t = lane & 3;
#if FORMAT == 0
  const int units = k / 64;
  const int step = (int)(unit % units) * 4 + c;
  const int pair = slot & 3, tile = pair >> 1, reg = pair & 1, hi = slot >> 2;
#else
  const int units = k / 32;
  const int step = (int)(unit % units) * 2 + (c >> 1);
  const int tile = c & 1, reg = slot >> 1, hi = slot & 1;
#endif
  row = (int)(unit / units) * 16 + tile * 8 + g;
  col = step * 16 + 2 * t + 8 * reg + hi;
}

// Code (row, col) of Keel's layout: 4-bit codes in words of 8 columns (columns 0,2,4,6,1,3,5,7 in
// nibbles 0..7), 8-bit codes one a byte; k columns a row (k a multiple of 8).
__device__ __forceinline__ unsigned int code_at(const unsigned char* codes, int row, int col, int k) {
#if FORMAT == 0
  const int slot = ((col & 1) << 2) | ((col & 7) >> 1);
  return (codes[(long long)row * (k / 2) + (col >> 3) * 4 + (slot >> 1)] >> ((slot & 1) * 4)) & 0xfu;
#else
  return codes[(long long)row * k + col];
#endif
}

// out: n k / (FORMAT 0 ? 8 : 4) fragment words from codes [n, row bytes] in Keel's layout.
extern "C" __global__ void marlin_pack_kernel(unsigned int* __restrict__ out, const unsigned char* __restrict__ codes, int n, int k) {
  PDL_PROLOGUE();
  const long long words = (long long)n * k / (FORMAT == 0 ? 8 : 4);
  for (long long w = blockIdx.x * (long long)blockDim.x + threadIdx.x; w < words; w += (long long)gridDim.x * blockDim.x) {
    unsigned int v = 0;
#pragma unroll
    for (int slot = 0; slot < (FORMAT == 0 ? 8 : 4); slot++) {
      int row, col;
      fragment_position(w, slot, k, row, col);
      v |= code_at(codes, row, col, k) << (slot * (FORMAT == 0 ? 4 : 8));
    }
    out[w] = v;
  }
}

// out [n / 16, groups, 16] = in [n, groups] for `bytes`-byte elements (4: scales, 1: zeros).
extern "C" __global__ void marlin_params_kernel(unsigned char* __restrict__ out, const unsigned char* __restrict__ in, int n, int groups, int bytes) {
  PDL_PROLOGUE();
  const long long total = (long long)n * groups;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
    const int row = (int)(i / groups), group = (int)(i - (long long)row * groups);
    const long long to = ((long long)(row >> 4) * groups + group) * 16 + (row & 15);
    for (int b = 0; b < bytes; b++) out[to * bytes + b] = in[i * bytes + b];
  }
}

// e4m3 code -> its value / 2^8, exactly (quantized-linear.cu's).
__device__ __forceinline__ float fp8_value_2m8(unsigned int b) {
  return f16_to_f32((unsigned short)(((b & 0x7fu) << 7) | ((b & 0x80u) << 8)));
}

// out [n, k] bf16 in input column order (out[row, perm[col]]; perm null: the identity) from the
// fragment layout: the value dequantize_kernel (quantized-linear.cu) gives. FP8 1: fp8 codes.
extern "C" __global__ void marlin_dequantize_kernel(bf16* __restrict__ out, const unsigned int* __restrict__ words, const float* __restrict__ scales,
                                                    const unsigned char* __restrict__ zeros, const int* __restrict__ perm, int n, int k, int groups,
                                                    int group_size, int fp8) {
  PDL_PROLOGUE();
  const long long total = (long long)n * k / (FORMAT == 0 ? 8 : 4);
  for (long long w = blockIdx.x * (long long)blockDim.x + threadIdx.x; w < total; w += (long long)gridDim.x * blockDim.x) {
    const unsigned int v = words[w];
#pragma unroll
    for (int slot = 0; slot < (FORMAT == 0 ? 8 : 4); slot++) {
      int row, col;
      fragment_position(w, slot, k, row, col);
      const long long p = ((long long)(row >> 4) * groups + col / group_size) * 16 + (row & 15);
      const unsigned int code = (v >> (slot * (FORMAT == 0 ? 4 : 8))) & (FORMAT == 0 ? 0xfu : 0xffu);
      float value;
      if (fp8) {
        value = fp8_value_2m8(code) * 256.f * scales[p];
      } else {
        const float zero = zeros != nullptr ? (float)zeros[p] : (FORMAT == 0 ? 8.f : 128.f);
        value = ((float)code - zero) * scales[p];
      }
      out[(long long)row * k + (perm != nullptr ? perm[col] : col)] = f32_to_bf16(value);
    }
  }
}
