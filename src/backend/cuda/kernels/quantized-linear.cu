// Linear layers with quantized weights, in Keel's layout (src/tensor/quantized-weight.ts): each
// output row's codes contiguous, FORMAT 0 int4 (32-bit words of 8 codes, columns 0,2,4,6,1,3,5,7 in
// nibbles 0..7), 1 int8, 2 fp8 e4m3, 3 nf4 and 4 fp4 (bitsandbytes' 4-bit data types: codes packed
// as int4's, each the index of a value in a 16-entry table, kept in shared memory); a float32
// scale and (ZEROS=1) a u8 zero code per (row, group).
//
// quantized_gemv_kernel is the decode path: a warp per output row streams its codes in 16-byte
// chunks (32 int4 or 16 8-bit codes, all in one scale group), so an int4 weight costs a quarter of
// bf16's bytes. Codes become floats exactly, without integer conversions: OR-ing a code into the
// mantissa of 2^23 gives 2^23 + q, and subtracting 2^23 + zero leaves q - zero. An fp8 code's bits
// moved into a half's exponent and mantissa give its value / 2^8, the 2^8 folded into the scale.
// Each chunk's sum over its codes is multiplied by the chunk's scale once, so a row reads ROWS
// activations per code and one scale per chunk.
//
// dequantize_kernel writes the bf16 weight in input column order (act-order permutation applied),
// for prefill GEMMs through cuBLAS and for shapes the GEMV does not take. permute_columns_kernel
// gathers an act-order layer's activations into its stored column order for the GEMV.
#include "common.cuh"

// nvcc-check: -DFORMAT=0 -DROWS=1 -DZEROS=1
// nvcc-check: -DFORMAT=0 -DROWS=4 -DZEROS=0
// nvcc-check: -DFORMAT=1 -DROWS=2 -DZEROS=0
// nvcc-check: -DFORMAT=1 -DROWS=8 -DZEROS=1
// nvcc-check: -DFORMAT=2 -DROWS=1 -DZEROS=0
// nvcc-check: -DFORMAT=2 -DROWS=3 -DZEROS=0
// nvcc-check: -DFORMAT=3 -DROWS=1 -DZEROS=0
// nvcc-check: -DFORMAT=4 -DROWS=5 -DZEROS=0

#ifndef FORMAT
#define FORMAT 0
#endif
#ifndef ROWS
#define ROWS 1
#endif
#ifndef ZEROS
#define ZEROS 0
#endif
// 4-bit codes in int4's packing (int4, nf4, fp4), and codes that index a value table (nf4, fp4).
#define FOUR_BIT (FORMAT == 0 || FORMAT == 3 || FORMAT == 4)
#define TABLE_CODES (FORMAT == 3 || FORMAT == 4)
// Columns of one 16-byte chunk of codes.
#define CHUNK_COLS (FOUR_BIT ? 32 : 16)
// Chunks in flight per lane.
#define UNROLL 4
#define MAGIC 8388608.f  // 2^23

__device__ __forceinline__ float int_code(unsigned int q, float zero_magic) { return __uint_as_float(0x4B000000u | q) - zero_magic; }

// e4m3 code -> its value / 2^8, exactly (normal and subnormal codes alike; no NaN codes in weights).
__device__ __forceinline__ float fp8_code(unsigned int b) {
  return f16_to_f32((unsigned short)(((b & 0x7fu) << 7) | ((b & 0x80u) << 8)));
}

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

// The format's value table in shared memory (every thread of the block calls it, before any returns).
__device__ __forceinline__ const float* load_table(float* shared) {
#if TABLE_CODES
  if (threadIdx.x < 16) shared[threadIdx.x] = CODE_TABLE[threadIdx.x];
  __syncthreads();
#endif
  return shared;
}

// The chunk's codes as floats (q - zero, fp8 value / 2^8, or the table's value), in column order.
__device__ __forceinline__ void decode_chunk(const uint4 v, float zero_magic, const float* table, float* w) {
  const unsigned int words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; i++) {
#if TABLE_CODES
#pragma unroll
    for (int s = 0; s < 4; s++) {
      const unsigned int t = (words[i] >> (4 * s)) & 0x000f000fu;
      w[8 * i + 2 * s] = table[t & 0xffffu];
      w[8 * i + 2 * s + 1] = table[t >> 16];
    }
#elif FORMAT == 0
#pragma unroll
    for (int s = 0; s < 4; s++) {
      const unsigned int t = (words[i] >> (4 * s)) & 0x000f000fu;
      w[8 * i + 2 * s] = int_code(t & 0xffffu, zero_magic);
      w[8 * i + 2 * s + 1] = int_code(t >> 16, zero_magic);
    }
#elif FORMAT == 1
#pragma unroll
    for (int b = 0; b < 4; b++) w[4 * i + b] = int_code((words[i] >> (8 * b)) & 0xffu, zero_magic);
#else
#pragma unroll
    for (int b = 0; b < 4; b++) w[4 * i + b] = fp8_code((words[i] >> (8 * b)) & 0xffu);
#endif
  }
}

// grid ceil(n / warps per block), block a multiple of 32; out [ROWS, n] = x [ROWS, k] · Wᵀ (+ bias).
// k a multiple of CHUNK_COLS, group_size a multiple of CHUNK_COLS (or k); row_chunks = k / CHUNK_COLS.
extern "C" __global__ void __launch_bounds__(128) quantized_gemv_kernel(bf16* __restrict__ out, const bf16* __restrict__ x, const uint4* __restrict__ codes,
                                                                        const float* __restrict__ scales, const unsigned char* __restrict__ zeros,
                                                                        const bf16* __restrict__ bias, int n, int row_chunks, int groups, int group_size) {
  __shared__ float table_shared[16];
  const float* table = load_table(table_shared);
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= n) return;
  const uint4* w_row = codes + (long long)row * row_chunks;
  const int k = row_chunks * CHUNK_COLS;
  float acc[ROWS];
#pragma unroll
  for (int r = 0; r < ROWS; r++) acc[r] = 0.f;
  for (int base = 0; base < row_chunks; base += 32 * UNROLL) {
    uint4 wv[UNROLL];
#pragma unroll
    for (int u = 0; u < UNROLL; u++) {
      const int c = base + u * 32 + lane;
      wv[u] = c < row_chunks ? load_streaming(w_row + c) : make_uint4(0u, 0u, 0u, 0u);
    }
#pragma unroll
    for (int u = 0; u < UNROLL; u++) {
      const int c = base + u * 32 + lane;
      if (c >= row_chunks) continue;
      const int group = c * CHUNK_COLS / group_size;
#if FORMAT == 2
      const float scale = scales[(long long)row * groups + group] * 256.f;
      const float zero_magic = 0.f;
#elif TABLE_CODES
      const float scale = scales[(long long)row * groups + group];
      const float zero_magic = 0.f;
#elif ZEROS
      const float scale = scales[(long long)row * groups + group];
      const float zero_magic = MAGIC + (float)zeros[(long long)row * groups + group];
#else
      const float scale = scales[(long long)row * groups + group];
      const float zero_magic = MAGIC + (FORMAT == 0 ? 8.f : 128.f);
#endif
      float w[CHUNK_COLS];
      decode_chunk(wv[u], zero_magic, table, w);
#pragma unroll
      for (int r = 0; r < ROWS; r++) {
        const uint4* xr = reinterpret_cast<const uint4*>(x + (long long)r * k + c * CHUNK_COLS);
        float sum = 0.f;
#pragma unroll
        for (int j = 0; j < CHUNK_COLS / 8; j++) {
          float xf[8];
          unpack8(xr[j], xf);
#pragma unroll
          for (int e = 0; e < 8; e++) sum = fmaf(xf[e], w[8 * j + e], sum);
        }
        acc[r] = fmaf(sum, scale, acc[r]);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < ROWS; r++) acc[r] = warp_sum(acc[r]);
  if (lane != 0) return;
  const float b = bias == nullptr ? 0.f : bf16_to_f32(bias[row]);
#pragma unroll
  for (int r = 0; r < ROWS; r++) out[(long long)r * n + row] = f32_to_bf16(acc[r] + b);
}

// out [rows, cols] bf16 in input column order: out[r, perm[c]] = value of stored column c (perm
// null: the identity). Any cols and group_size; row_bytes is a row of codes.
extern "C" __global__ void dequantize_kernel(bf16* __restrict__ out, const unsigned char* __restrict__ codes, const float* __restrict__ scales,
                                             const unsigned char* __restrict__ zeros, const int* __restrict__ perm, int rows, int cols,
                                             int groups, int group_size, int row_bytes) {
  __shared__ float table_shared[16];
  const float* table = load_table(table_shared);
  const long long total = (long long)rows * cols;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
    const int row = (int)(i / cols), col = (int)(i - (long long)row * cols);
    const long long g = (long long)row * groups + col / group_size;
    const unsigned char* row_codes = codes + (long long)row * row_bytes;
#if FOUR_BIT
    // Nibble slot of column col within its word: columns 0,2,4,6 in slots 0..3, 1,3,5,7 in 4..7.
    const int slot = ((col & 1) << 2) | ((col & 7) >> 1);
    const unsigned int code = (row_codes[(col >> 3) * 4 + (slot >> 1)] >> ((slot & 1) * 4)) & 0xfu;
#else
    const unsigned int code = row_codes[col];
#endif
#if FORMAT == 2
    const float value = fp8_code(code) * 256.f * scales[g];
#elif TABLE_CODES
    const float value = table[code] * scales[g];
#else
    const float zero = zeros != nullptr ? (float)zeros[g] : (FORMAT == 0 ? 8.f : 128.f);
    const float value = ((float)code - zero) * scales[g];
#endif
    out[(long long)row * cols + (perm != nullptr ? perm[col] : col)] = f32_to_bf16(value);
  }
}

// out [rows, cols] = x[:, perm]: stored column j of an act-order weight multiplies input column perm[j].
extern "C" __global__ void permute_columns_kernel(bf16* __restrict__ out, const bf16* __restrict__ x, const int* __restrict__ perm, int rows, int cols) {
  const long long total = (long long)rows * cols;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
    const int row = (int)(i / cols), col = (int)(i - (long long)row * cols);
    out[i] = x[(long long)row * cols + perm[col]];
  }
}
