// Linear layers with quantized weights, in Keel's layout (src/tensor/quantized-weight.ts): each
// output row's codes contiguous, FORMAT 0 int4 (32-bit words of 8 codes, columns 0,2,4,6,1,3,5,7 in
// nibbles 0..7), 1 int8, 2 fp8 e4m3, 3 nf4 and 4 fp4 (bitsandbytes' 4-bit data types: codes packed
// as int4's, each the index of a value in a 16-entry table, kept in shared memory); a float32
// scale and (ZEROS=1) a u8 zero code per (row, group), and (MINS=1, int4 only: GGUF's Q4_K) a float32
// min per (row, group) subtracted after scaling.
//
// quantized_gemv_kernel is the decode path (1..8 batch rows), built to stream codes at the memory
// roofline rather than be bound by its per-code arithmetic:
// - a warp gives RPW = 4 output rows at once: each lane loads 16 bytes (32 int4 or 16 8-bit codes,
//   all in one scale group) of each of the 4 rows per step, two steps in flight (8 independent
//   128-bit loads), and every activation it loads and unpacks serves all 4 rows;
// - int4 codes become floats in two ops per pair: (word >> 4s) & 0x000f000f | 0x43004300 is the
//   bf16 pair (128 + q[2s], 128 + q[2s+1]), whose halves are floats after a shift or a mask. The
//   zero point is not subtracted per code: Σ (q - z) x = Σ (128 + q) x - (128 + z) Σ x, with Σ x
//   taken once per 8 columns for all 4 rows (each product is exact in f32, so only the sums round);
//   a min is taken off the same way, min · Σ x once per chunk (a chunk lies in one group);
// - int8 codes become 2^23 + q in one byte permute, less 2^23 + zero; an fp8 code's bits moved
//   into a half's give its value / 2^8, the 2^8 folded into the scale;
// - nf4 and fp4 codes (int4's packing) index their 16-value table in shared memory, with no zero;
// - each chunk's sum is multiplied by its scale once; the lanes' sums are reduced by shuffles.
// With too few output rows to fill the GPU the columns are split over gridDim.y, and the last split
// of a block's rows adds the splits' f32 partial sums (split-k.cuh).
//
// dequantize_kernel writes the bf16 weight in input column order (act-order permutation applied),
// for prefill GEMMs through cuBLAS and for shapes the GEMV does not take. permute_columns_kernel
// gathers an act-order layer's activations into its stored column order for the GEMV.
// embed_quantized_tokens_kernel is the embedding lookup from a quantized table, decoding as
// dequantize_kernel does only the rows it looks up.
#include "common.cuh"
#include "split-k.cuh"

// nvcc-check: -DFORMAT=0 -DROWS=1 -DZEROS=1
// nvcc-check: -DFORMAT=0 -DROWS=8 -DZEROS=0
// nvcc-check: -DFORMAT=0 -DROWS=1 -DZEROS=1 -DMINS=1
// nvcc-check: -DFORMAT=0 -DROWS=8 -DZEROS=1 -DMINS=1
// nvcc-check: -DFORMAT=1 -DROWS=2 -DZEROS=0
// nvcc-check: -DFORMAT=1 -DROWS=8 -DZEROS=1
// nvcc-check: -DFORMAT=2 -DROWS=1 -DZEROS=0
// nvcc-check: -DFORMAT=2 -DROWS=5 -DZEROS=0
// nvcc-check: -DFORMAT=3 -DROWS=1 -DZEROS=0
// nvcc-check: -DFORMAT=3 -DROWS=8 -DZEROS=0
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
#ifndef MINS
#define MINS 0
#endif
#if MINS && FORMAT != 0
#error "mins are an int4 feature"
#endif
#include "code-table.cuh"
// Columns of one 16-byte chunk of codes, and of the 4-byte words it is decoded by.
#define CHUNK_COLS (FOUR_BIT ? 32 : 16)
#define WORD_COLS (FOUR_BIT ? 8 : 4)
// Output rows per warp, and chunk steps in flight per lane (one past 4 batch rows, whose
// activations and sums take the registers).
#define RPW 4
#define STEPS (ROWS > 4 ? 1 : 2)
#define MAGIC 8388608.f  // 2^23

// e4m3 code -> its value / 2^8, exactly (normal and subnormal codes alike; no NaN codes in weights).
__device__ __forceinline__ float fp8_code(unsigned int b) {
  return f16_to_f32((unsigned short)(((b & 0x7fu) << 7) | ((b & 0x80u) << 8)));
}

// The WORD_COLS codes of one word as floats, in column order: int4 128 + q (the zero is taken off
// through Σ x), int8 q - zero (zero_magic = 2^23 + zero), fp8 value / 2^8, nf4/fp4 the table's value.
__device__ __forceinline__ void decode_word(unsigned int word, float zero_magic, const float* table, float* w) {
#if TABLE_CODES
#pragma unroll
  for (int s = 0; s < 4; s++) {
    const unsigned int t = (word >> (4 * s)) & 0x000f000fu;
    w[2 * s] = table[t & 0xffffu];
    w[2 * s + 1] = table[t >> 16];
  }
#elif FORMAT == 0
#pragma unroll
  for (int s = 0; s < 4; s++) {
    const unsigned int t = ((word >> (4 * s)) & 0x000f000fu) | 0x43004300u;
    w[2 * s] = __uint_as_float(t << 16);
    w[2 * s + 1] = __uint_as_float(t & 0xffff0000u);
  }
#elif FORMAT == 1
#pragma unroll
  for (int b = 0; b < 4; b++) w[b] = __uint_as_float(__byte_perm(word, 0x4B000000u, 0x7540u + b)) - zero_magic;
#else
#pragma unroll
  for (int b = 0; b < 4; b++) w[b] = fp8_code((word >> (8 * b)) & 0xffu);
#endif
}

// grid (ceil(n / (RPW · warps per block)), splits), block a multiple of 32. Split y covers chunks
// [y · split_chunks, min(row_chunks, (y + 1) · split_chunks)) of every row; row_chunks = k / CHUNK_COLS.
// out [ROWS, n] bf16 = x [ROWS, k] · Wᵀ (+ bias); with splits, through partial [splits, ROWS, n] f32
// and arrival (a counter a block: CudaDevice.arrivalCounters). k and group_size multiples of
// CHUNK_COLS (or group_size = k).
extern "C" __global__ void __launch_bounds__(128) quantized_gemv_kernel(bf16* __restrict__ out, float* __restrict__ partial, unsigned int* __restrict__ arrival,
                                                                        const bf16* __restrict__ x,
                                                                        const uint4* __restrict__ codes, const float* __restrict__ scales,
                                                                        const unsigned char* __restrict__ zeros, const float* __restrict__ mins,
                                                                        const bf16* __restrict__ bias, int n,
                                                                        int row_chunks, int groups, int group_size, int split_chunks) {
  PDL_PROLOGUE();
  __shared__ float table_shared[16];
  const float* table = load_table(table_shared);
  const int lane = threadIdx.x & 31;
  const int block_rows = (blockDim.x >> 5) * RPW;
  const int row0 = blockIdx.x * block_rows + (threadIdx.x >> 5) * RPW;
  const bool active = row0 < n;  // a warp past the last row only joins its block's split count
  const int c_begin = blockIdx.y * split_chunks, c_end = min(row_chunks, c_begin + split_chunks);
  const int k = row_chunks * CHUNK_COLS;
  // Rows past n read row n - 1 again and write nothing.
  const uint4* w_row[RPW];
#pragma unroll
  for (int i = 0; i < RPW; i++) w_row[i] = codes + (long long)min(row0 + i, n - 1) * row_chunks;
  float acc[RPW][ROWS];
#pragma unroll
  for (int i = 0; i < RPW; i++)
#pragma unroll
    for (int r = 0; r < ROWS; r++) acc[i][r] = 0.f;

  for (int base = c_begin + lane; active && base < c_end; base += 32 * STEPS) {
    uint4 wv[STEPS][RPW];
#pragma unroll
    for (int u = 0; u < STEPS; u++)
#pragma unroll
      for (int i = 0; i < RPW; i++) {
        const int c = base + 32 * u;
        wv[u][i] = c < c_end ? load_streaming(w_row[i] + c) : make_uint4(0u, 0u, 0u, 0u);
      }
#pragma unroll
    for (int u = 0; u < STEPS; u++) {
      const int c = base + 32 * u;
      if (c >= c_end) continue;
      const int group = c * CHUNK_COLS / group_size;
      float scale[RPW], zero_magic[RPW];
#if MINS
      float row_min[RPW];
#endif
#pragma unroll
      for (int i = 0; i < RPW; i++) {
        const long long g = (long long)min(row0 + i, n - 1) * groups + group;
#if MINS
        row_min[i] = mins[g];
#endif
#if FORMAT == 2
        scale[i] = scales[g] * 256.f;
        zero_magic[i] = 0.f;
#elif TABLE_CODES
        scale[i] = scales[g];
        zero_magic[i] = 0.f;
#else
        scale[i] = scales[g];
        const float zero = ZEROS ? (float)zeros[g] : (FORMAT == 0 ? 8.f : 128.f);
        zero_magic[i] = FORMAT == 0 ? 128.f + zero : MAGIC + zero;
#endif
      }
      float sum[RPW][ROWS];
#pragma unroll
      for (int r = 0; r < ROWS; r++)
#pragma unroll
        for (int i = 0; i < RPW; i++) sum[i][r] = 0.f;
#if FORMAT == 0
      float sum_x[ROWS];
#pragma unroll
      for (int r = 0; r < ROWS; r++) sum_x[r] = 0.f;
#endif
      // Eight activation columns at a time (one 16-byte load per batch row), against the one
      // (int4) or two (8-bit) words of each output row that cover them.
#pragma unroll
      for (int j = 0; j < CHUNK_COLS / 8; j++) {
        float xf[ROWS][8];
#pragma unroll
        for (int r = 0; r < ROWS; r++) {
          unpack8(reinterpret_cast<const uint4*>(x + (long long)r * k + (long long)c * CHUNK_COLS)[j], xf[r]);
#if FORMAT == 0
#pragma unroll
          for (int e = 0; e < 8; e++) sum_x[r] += xf[r][e];
#endif
        }
#pragma unroll
        for (int i = 0; i < RPW; i++) {
          const unsigned int words[4] = {wv[u][i].x, wv[u][i].y, wv[u][i].z, wv[u][i].w};
          float w[8];
#pragma unroll
          for (int h = 0; h < 8 / WORD_COLS; h++) decode_word(words[j * (8 / WORD_COLS) + h], zero_magic[i], table, w + h * WORD_COLS);
#pragma unroll
          for (int r = 0; r < ROWS; r++)
#pragma unroll
            for (int e = 0; e < 8; e++) sum[i][r] = fmaf(w[e], xf[r][e], sum[i][r]);
        }
      }
#pragma unroll
      for (int i = 0; i < RPW; i++)
#pragma unroll
        for (int r = 0; r < ROWS; r++) {
#if FORMAT == 0
          acc[i][r] = fmaf(scale[i], fmaf(-zero_magic[i], sum_x[r], sum[i][r]), acc[i][r]);
#if MINS
          acc[i][r] = fmaf(-row_min[i], sum_x[r], acc[i][r]);
#endif
#else
          acc[i][r] = fmaf(scale[i], sum[i][r], acc[i][r]);
#endif
        }
    }
  }
#pragma unroll
  for (int i = 0; i < RPW; i++)
#pragma unroll
    for (int r = 0; r < ROWS; r++) acc[i][r] = warp_sum(acc[i][r]);
  if (lane == 0) {
#pragma unroll
    for (int i = 0; i < RPW; i++) {
      const int row = row0 + i;
      if (row >= n) continue;
      if (gridDim.y > 1) {
#pragma unroll
        for (int r = 0; r < ROWS; r++) partial[((long long)blockIdx.y * ROWS + r) * n + row] = acc[i][r];
      } else {
        const float b = bias == nullptr ? 0.f : bf16_to_f32(bias[row]);
#pragma unroll
        for (int r = 0; r < ROWS; r++) out[(long long)r * n + row] = f32_to_bf16(acc[i][r] + b);
      }
    }
  }
  if (gridDim.y > 1) {
    const int first = blockIdx.x * block_rows;
    split_sum_if_last(out, partial, bias, ROWS, n, gridDim.y, 0, ROWS, first, min(n, first + block_rows), arrival + blockIdx.x);
  }
}

// The value of stored column col of a row whose codes start at row_codes, g the index of its
// (row, group) among scales, zeros and mins.
__device__ __forceinline__ float stored_value(const unsigned char* row_codes, int col, long long g, const float* scales, const unsigned char* zeros,
                                              const float* mins, const float* table) {
#if FOUR_BIT
  // Nibble slot of column col within its word: columns 0,2,4,6 in slots 0..3, 1,3,5,7 in 4..7.
  const int slot = ((col & 1) << 2) | ((col & 7) >> 1);
  const unsigned int code = (row_codes[(col >> 3) * 4 + (slot >> 1)] >> ((slot & 1) * 4)) & 0xfu;
#else
  const unsigned int code = row_codes[col];
#endif
#if FORMAT == 2
  return fp8_code(code) * 256.f * scales[g];
#elif TABLE_CODES
  return table[code] * scales[g];
#else
  const float zero = zeros != nullptr ? (float)zeros[g] : (FORMAT == 0 ? 8.f : 128.f);
  return ((float)code - zero) * scales[g] - (mins != nullptr ? mins[g] : 0.f);
#endif
}

// out [rows, cols] bf16 in input column order: out[r, perm[c]] = value of stored column c (perm
// null: the identity), each run of perm_rows rows with its own cols of perm (stacked act-order
// experts; perm_rows = rows: one permutation). Any cols and group_size; row_bytes is a row of
// codes; mins (int4) or null.
extern "C" __global__ void dequantize_kernel(bf16* __restrict__ out, const unsigned char* __restrict__ codes, const float* __restrict__ scales,
                                             const unsigned char* __restrict__ zeros, const float* __restrict__ mins, const int* __restrict__ perm, int rows, int cols,
                                             int groups, int group_size, int row_bytes, int perm_rows) {
  PDL_PROLOGUE();
  __shared__ float table_shared[16];
  const float* table = load_table(table_shared);
  const long long total = (long long)rows * cols;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
    const int row = (int)(i / cols), col = (int)(i - (long long)row * cols);
    const float value = stored_value(codes + (long long)row * row_bytes, col, (long long)row * groups + col / group_size, scales, zeros, mins, table);
    out[(long long)row * cols + (perm != nullptr ? perm[(long long)(row / perm_rows) * cols + col] : col)] = f32_to_bf16(value);
  }
}

// The embedding lookup from a quantized table (int4 or int8 in Keel's row layout, no act-order: a
// GGUF file's token embedding): out[r, :] = row id of the table, dequantized, times scale, with id
// chosen as embed_tokens_kernel (rows.cu) chooses it (embedding_row; -1 gives a zero row). One
// block per token row, a thread per column in turn: it decodes only the rows it looks up.
extern "C" __global__ void embed_quantized_tokens_kernel(bf16* __restrict__ out, const unsigned char* __restrict__ codes, const float* __restrict__ scales,
                                                         const unsigned char* __restrict__ zeros, const float* __restrict__ mins,
                                                         const int* __restrict__ tokens, const int* __restrict__ sources, const int* __restrict__ sampled,
                                                         int first_row, int vocab, int cols, int groups, int group_size, int row_bytes, float scale) {
  PDL_PROLOGUE();
  __shared__ float table_shared[16];
  const float* table = load_table(table_shared);
  const int id = embedding_row(blockIdx.x, tokens, sources, sampled, first_row, vocab);
  bf16* to = out + (long long)blockIdx.x * cols;
  const unsigned char* row_codes = codes + (long long)(id < 0 ? 0 : id) * row_bytes;
  for (int col = threadIdx.x; col < cols; col += blockDim.x) {
    const float value = id < 0 ? 0.f : stored_value(row_codes, col, (long long)id * groups + col / group_size, scales, zeros, mins, table);
    // Rounded to float32 before the scale, as the CPU twin's decoded row is.
    to[col] = f32_to_bf16(__fmul_rn(value, scale));
  }
}

// out [rows, cols] = x[:, perm]: stored column j of an act-order weight multiplies input column perm[j].
extern "C" __global__ void permute_columns_kernel(bf16* __restrict__ out, const bf16* __restrict__ x, const int* __restrict__ perm, int rows, int cols) {
  PDL_PROLOGUE();
  const long long total = (long long)rows * cols;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
    const int row = (int)(i / cols), col = (int)(i - (long long)row * cols);
    out[i] = x[(long long)row * cols + perm[col]];
  }
}
