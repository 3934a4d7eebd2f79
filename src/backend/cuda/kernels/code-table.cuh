// bitsandbytes' 4-bit data types for the quantized linear kernels (quantized-linear.cu,
// quantized-gemm.cu), which include this after defining FORMAT: 3 nf4 and 4 fp4 store codes in
// int4's packing (FORMAT 0), each the index of a value in a 16-entry table scaled per block.
#pragma once

// 4-bit codes in int4's packing (int4, nf4, fp4), and codes that index a value table (nf4, fp4).
#define FOUR_BIT (FORMAT == 0 || FORMAT == 3 || FORMAT == 4)
#define TABLE_CODES (FORMAT == 3 || FORMAT == 4)

// bitsandbytes' NF4 values (QLoRA's NormalFloat quantiles) and FP4 values (sign bit 3, e2m1
// patterns 0, 0.0625, 8, 12, 4, 6, 2, 3 divided by 12), code 0..15: src/tensor/quantized-weight.ts.
#if FORMAT == 3
__device__ const float CODE_TABLE[16] = {-1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
                                         -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
                                         0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
                                         0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};
#elif FORMAT == 4
__device__ const float CODE_TABLE[16] = {0.0f, 0.0625f / 12.f, 8.f / 12.f, 1.0f, 4.f / 12.f, 6.f / 12.f, 2.f / 12.f, 3.f / 12.f,
                                         -0.0f, -0.0625f / 12.f, -8.f / 12.f, -1.0f, -4.f / 12.f, -6.f / 12.f, -2.f / 12.f, -3.f / 12.f};
#endif

// The format's value table in shared memory (every thread of the block calls it, before any
// returns). Entry i sits in bank i, so a warp's lookups never conflict, whatever codes it reads.
__device__ __forceinline__ const float* load_table(float* shared) {
#if TABLE_CODES
  if (threadIdx.x < 16) shared[threadIdx.x] = CODE_TABLE[threadIdx.x];
  __syncthreads();
#endif
  return shared;
}
