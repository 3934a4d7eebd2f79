// Linear layers with AQLM weights (src/tensor/quantized-weight.ts): each group of 8 input columns
// of an output row is one 16-bit code word, CODEBOOKS = 1 (one index into 65536 vectors of 8
// float16 values: "1x16") or 2 (two indices into 256 vectors each, the first in the low byte:
// "2x8"), and the row's float32 scale multiplies Σ over the codebooks of the indexed vectors.
// Stacked parts (q/k/v) each have their own codebooks [CODEBOOKS, size, 8]; rows below part_end0
// use part 0's, below part_end1 part 1's, and so on (at most MAX_PARTS parts).
//
// aqlm_gemv_kernel is the decode path (1..8 batch rows). A block covers a contiguous range of
// output rows, RPW rows per warp at a time; a lane streams 16 bytes of code words (8 groups, 64
// columns) of each of its rows, looks up each group's vector(s), and dots them with the 8
// activations of each batch row (one 16-byte load, serving the RPW rows). The row's sum is
// multiplied by its scale once, after the lanes' sums are reduced.
// - 2x8: the block first copies the codebooks of the parts its rows use into shared memory (8 KiB
//   a part: 2 × 256 vectors of 16 bytes), so lookups are 16-byte shared-memory loads.
// - 1x16: a part's codebook is 65536 × 8 float16 = 1 MiB, more than a block's shared memory, so
//   lookups are 16-byte read-only global loads, served by L1 and L2 (the H200's 50 MB L2 holds a
//   layer's codebooks many times over; which vectors a step touches is up to the codes).
//
// aqlm_dequantize_kernel writes the bf16 weight (each group's vector sum times its row's scale),
// for prefill batches through cuBLAS and for shapes the GEMV does not take.
#include "common.cuh"

// nvcc-check: -DCODEBOOKS=2 -DROWS=1
// nvcc-check: -DCODEBOOKS=2 -DROWS=8
// nvcc-check: -DCODEBOOKS=1 -DROWS=1
// nvcc-check: -DCODEBOOKS=1 -DROWS=5

#ifndef CODEBOOKS
#define CODEBOOKS 2
#endif
#ifndef ROWS
#define ROWS 1
#endif
// Vectors per codebook.
#define BOOK_SIZE (CODEBOOKS == 1 ? 65536 : 256)
#define MAX_PARTS 4
// Output rows per warp at a time: every activation load serves them all.
#define RPW 2

__device__ __forceinline__ int part_of(int row, int e0, int e1, int e2) { return (row >= e0) + (row >= e1) + (row >= e2); }

// Eight float16 values (one 16-byte vector) added into f.
__device__ __forceinline__ void add_half8(const uint4 v, float* f) {
  const unsigned int w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; i++) {
    f[2 * i] += f16_to_f32((unsigned short)(w[i] & 0xffffu));
    f[2 * i + 1] += f16_to_f32((unsigned short)(w[i] >> 16));
  }
}

// The 8 values of one group's code word, before the row's scale. `books` points at the row's
// part: its codebooks [CODEBOOKS, BOOK_SIZE] of 16-byte vectors (shared memory for 2x8).
__device__ __forceinline__ void decode_group(unsigned int word, const uint4* books, float* w) {
#pragma unroll
  for (int e = 0; e < 8; e++) w[e] = 0.f;
#if CODEBOOKS == 1
  add_half8(__ldg(books + word), w);
#else
  add_half8(books[word & 0xffu], w);
  add_half8(books[BOOK_SIZE + (word >> 8)], w);
#endif
}

// grid (blocks), block a multiple of 32 threads; block b covers output rows
// [b · rows_per_block, min(n, (b + 1) · rows_per_block)). out [ROWS, n] bf16 = x [ROWS, k] · Wᵀ
// (+ bias); k a multiple of 64 (whole 16-byte chunks of code words per row).
extern "C" __global__ void __launch_bounds__(256) aqlm_gemv_kernel(bf16* __restrict__ out, const bf16* __restrict__ x, const uint4* __restrict__ codes,
                                                                   const uint4* __restrict__ codebooks, const float* __restrict__ scales,
                                                                   const bf16* __restrict__ bias, int n, int k, int rows_per_block, int part_end0,
                                                                   int part_end1, int part_end2) {
  PDL_PROLOGUE();
  const int first = blockIdx.x * rows_per_block;
  const int last = min(n, first + rows_per_block);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
#if CODEBOOKS == 2
  // The codebooks of the parts rows [first, last) use, each in its part's slot.
  __shared__ uint4 shared_books[MAX_PARTS * CODEBOOKS * BOOK_SIZE];
  if (first < last) {
    const int p_first = part_of(first, part_end0, part_end1, part_end2), p_last = part_of(last - 1, part_end0, part_end1, part_end2);
    for (int p = p_first; p <= p_last; p++)
      for (int i = threadIdx.x; i < CODEBOOKS * BOOK_SIZE; i += blockDim.x)
        shared_books[p * CODEBOOKS * BOOK_SIZE + i] = codebooks[(long long)p * CODEBOOKS * BOOK_SIZE + i];
  }
  __syncthreads();
  const uint4* books = shared_books;
#else
  const uint4* books = codebooks;
#endif
  const int row_chunks = k / 64;
  for (int row0 = first + warp * RPW; row0 < last; row0 += warps * RPW) {
    const uint4* part_books[RPW];
    const uint4* row_codes[RPW];
#pragma unroll
    for (int i = 0; i < RPW; i++) {
      // Rows past the block's last read row last - 1 again and write nothing.
      const int row = min(row0 + i, last - 1);
      part_books[i] = books + (long long)part_of(row, part_end0, part_end1, part_end2) * CODEBOOKS * BOOK_SIZE;
      row_codes[i] = codes + (long long)row * row_chunks;
    }
    float acc[RPW][ROWS];
#pragma unroll
    for (int i = 0; i < RPW; i++)
#pragma unroll
      for (int r = 0; r < ROWS; r++) acc[i][r] = 0.f;
    for (int c = lane; c < row_chunks; c += 32) {
      uint4 chunk[RPW];
#pragma unroll
      for (int i = 0; i < RPW; i++) chunk[i] = load_streaming(row_codes[i] + c);
#pragma unroll
      for (int h = 0; h < 8; h++) {
        float xf[ROWS][8];
#pragma unroll
        for (int r = 0; r < ROWS; r++) unpack8(reinterpret_cast<const uint4*>(x + (long long)r * k + c * 64)[h], xf[r]);
#pragma unroll
        for (int i = 0; i < RPW; i++) {
          const unsigned int words[4] = {chunk[i].x, chunk[i].y, chunk[i].z, chunk[i].w};
          float w[8];
          decode_group((words[h >> 1] >> (16 * (h & 1))) & 0xffffu, part_books[i], w);
#pragma unroll
          for (int r = 0; r < ROWS; r++)
#pragma unroll
            for (int e = 0; e < 8; e++) acc[i][r] = fmaf(w[e], xf[r][e], acc[i][r]);
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
        if (row >= last) continue;
        const float b = bias == nullptr ? 0.f : bf16_to_f32(bias[row]);
#pragma unroll
        for (int r = 0; r < ROWS; r++) out[(long long)r * n + row] = f32_to_bf16(fmaf(acc[i][r], scales[row], b));
      }
    }
  }
}

// out [n, k] bf16: group g of row r = (Σ over codebooks of its vectors) · scales[r], one thread a
// group (8 columns, one 16-byte store). k a multiple of 8.
extern "C" __global__ void aqlm_dequantize_kernel(bf16* __restrict__ out, const unsigned short* __restrict__ codes, const uint4* __restrict__ codebooks,
                                                  const float* __restrict__ scales, int n, int k, int part_end0, int part_end1, int part_end2) {
  PDL_PROLOGUE();
  const int groups = k / 8;
  const long long total = (long long)n * groups;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
    const int row = (int)(i / groups);
    const uint4* books = codebooks + (long long)part_of(row, part_end0, part_end1, part_end2) * CODEBOOKS * BOOK_SIZE;
    float w[8];
    decode_group(codes[i], books, w);
    const float scale = scales[row];
#pragma unroll
    for (int e = 0; e < 8; e++) w[e] *= scale;
    reinterpret_cast<uint4*>(out)[i] = pack8(w);
  }
}
