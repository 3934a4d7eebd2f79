// GPTQ on the device (keel quantize; src/quantize/gptq-cuda.ts runs them, with cuBLAS for the
// triangular solves and the lazy updates). The CPU twin is src/quantize/gptq.ts: the same
// column-by-column algorithm in float64, unblocked. Matrices are float32, square ones [n, n].
#include "common.cuh"

// The widest run of columns gptq_block_kernel quantizes at once (one warp a row, four a lane).
#define GPTQ_BLOCK 128
#define GPTQ_SLOTS (GPTQ_BLOCK / 32)
// The diagonal blocks cholesky_diagonal_kernel factors.
#define CHOLESKY_BLOCK 64

// out[i, j] = in[index[i], index[j]]: a symmetric permutation (act-order's, reversed). Grid (⌈n/256⌉, n).
extern "C" __global__ void gather_symmetric_kernel(float* __restrict__ out, const float* __restrict__ in, const int* __restrict__ index, int n) {
  PDL_PROLOGUE();
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  const int i = blockIdx.y;
  if (j < n) out[(long long)i * n + j] = in[(long long)index[i] * n + index[j]];
}

// a[i, i] += add[i] (unless add is null); then diagonal[i] = a[i, i] (unless diagonal is null).
extern "C" __global__ void diagonal_kernel(float* __restrict__ a, const float* __restrict__ add, float* __restrict__ diagonal, int n) {
  PDL_PROLOGUE();
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float* at = a + (long long)i * n + i;
  if (add != nullptr) *at += add[i];
  if (diagonal != nullptr) diagonal[i] = *at;
}

// a = the identity [n, n]. Grid (⌈n/256⌉, n).
extern "C" __global__ void identity_kernel(float* __restrict__ a, int n) {
  PDL_PROLOGUE();
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  const int i = blockIdx.y;
  if (j < n) a[(long long)i * n + j] = i == j ? 1.f : 0.f;
}

// out[i, j] = in[n−1−j, n−1−i]: in read column-major, both indices reversed, written row-major.
// For M = L⁻¹ of the reversed matrix's Cholesky factor, this is U with H⁻¹ = UᵀU (gptq-cuda.ts).
extern "C" __global__ void reverse_transpose_kernel(float* __restrict__ out, const float* __restrict__ in, int n) {
  PDL_PROLOGUE();
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  const int i = blockIdx.y;
  if (j < n) out[(long long)i * n + j] = in[(long long)(n - 1 - j) * n + (n - 1 - i)];
}

// Factors the diagonal block A[k : k+b, k : k+b] (b ≤ CHOLESKY_BLOCK) of column-major a [n, n] in
// place into its lower Cholesky factor (the entries above the diagonal are left as they were).
// The blocks before it have been applied (cuBLAS's syrk). A pivot that is not positive sets
// *failed and is taken as 1, so the rest stays finite. One block of threads.
extern "C" __global__ void cholesky_diagonal_kernel(float* __restrict__ a, int n, int k, int b, int* __restrict__ failed) {
  PDL_PROLOGUE();
  __shared__ float s[CHOLESKY_BLOCK][CHOLESKY_BLOCK + 1];
  __shared__ float pivot;
  for (int e = threadIdx.x; e < b * b; e += blockDim.x) {
    const int r = e % b, c = e / b;
    s[r][c] = a[(long long)(k + c) * n + (k + r)];
  }
  for (int j = 0; j < b; j++) {
    __syncthreads();
    if (threadIdx.x == 0) {
      float d = s[j][j];
      if (!(d > 0.f)) {
        *failed = 1;
        d = 1.f;
      }
      pivot = sqrtf(d);
      s[j][j] = pivot;
    }
    __syncthreads();
    for (int r = j + 1 + threadIdx.x; r < b; r += blockDim.x) s[r][j] /= pivot;
    __syncthreads();
    const int m = b - j - 1;
    for (int e = threadIdx.x; e < m * m; e += blockDim.x) {
      const int r = j + 1 + e / m, c = j + 1 + e % m;
      if (c <= r) s[r][c] -= s[r][j] * s[c][j];
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < b * b; e += blockDim.x) {
    const int r = e % b, c = e / b;
    if (r >= c) a[(long long)(k + c) * n + (k + r)] = s[r][c];
  }
}

__device__ __forceinline__ float warp_min(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fminf(v, __shfl_xor_sync(FULL_MASK, v, o));
  return v;
}

// The float16 value nearest v: scales are stored as float16, so the grid uses that value.
__device__ __forceinline__ float round_to_f16(float v) {
  unsigned short h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
  return f16_to_f32(h);
}

// Quantizes the `count` (≤ GPTQ_BLOCK) columns from `start` of w [rows, cols] (columns in GPTQ's
// order; every earlier block's error already subtracted from them) one by one, as gptq.ts does:
// a group's grid is fitted when its first column comes, from the updated weights (a group that
// runs past this block starts at its first column, gptq-cuda.ts sees to it, and is read from w,
// whose columns there are current); each code goes to codes[r, order[c]], the column's error over
// U's diagonal to err [rows, count], and is subtracted along U's row from the block's columns
// still to come (the columns after the block take the whole block's at once: cuBLAS, after this).
// One warp a row, lane l holding the block's columns l, l + 32, ….
extern "C" __global__ void gptq_block_kernel(const float* __restrict__ u, const float* __restrict__ w, float* __restrict__ err, unsigned char* __restrict__ codes, float* __restrict__ scales,
                                             unsigned char* __restrict__ zeros, const int* __restrict__ order, int rows, int cols, int start, int count, int group_size, int bits,
                                             int symmetric) {
  PDL_PROLOGUE();
  const int lane = threadIdx.x & 31;
  const int r = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (r >= rows) return;
  const float* wr = w + (long long)r * cols;
  float v[GPTQ_SLOTS];
#pragma unroll
  for (int t = 0; t < GPTQ_SLOTS; t++) v[t] = lane + 32 * t < count ? wr[start + lane + 32 * t] : 0.f;
  const int groups = (cols + group_size - 1) / group_size;
  const float maxq = (float)((1 << bits) - 1);
  // A group that began in an earlier block keeps the grid fitted there.
  float scale = 1.f, zero = 0.f;
  if (start % group_size != 0) {
    const long long g = (long long)r * groups + start / group_size;
    scale = scales[g];
    zero = (float)zeros[g];
  }
#pragma unroll
  for (int t = 0; t < GPTQ_SLOTS; t++) {
    for (int l = 0; l < 32; l++) {
      const int i = 32 * t + l;
      if (i >= count) break;
      const int col = start + i;
      if (col % group_size == 0) {
        const int end = min(cols, col + group_size);
        float lo = 0.f, hi = 0.f;
        if (end <= start + count) {
#pragma unroll
          for (int tt = 0; tt < GPTQ_SLOTS; tt++) {
            const int c = start + lane + 32 * tt;
            if (c >= col && c < end) {
              lo = fminf(lo, v[tt]);
              hi = fmaxf(hi, v[tt]);
            }
          }
        } else {
          for (int c = col + lane; c < end; c += 32) {
            lo = fminf(lo, wr[c]);
            hi = fmaxf(hi, wr[c]);
          }
        }
        lo = warp_min(lo);
        hi = warp_max(hi);
        if (symmetric) {
          hi = fmaxf(-lo, hi);
          lo = -hi;
        }
        if (lo == 0.f && hi == 0.f) {
          scale = 1.f;
          zero = symmetric ? (maxq + 1.f) / 2.f : 0.f;
        } else {
          scale = round_to_f16((hi - lo) / maxq);
          zero = symmetric ? (maxq + 1.f) / 2.f : fminf(maxq, fmaxf(0.f, rintf(-lo / scale)));
        }
        if (lane == 0) {
          scales[(long long)r * groups + col / group_size] = scale;
          zeros[(long long)r * groups + col / group_size] = (unsigned char)zero;
        }
      }
      const float value = __shfl_sync(FULL_MASK, v[t], l);
      const float* ui = u + (long long)col * cols;
      const float code = fminf(maxq, fmaxf(0.f, rintf(value / scale) + zero));
      const float e = (value - scale * (code - zero)) / ui[col];
      if (lane == 0) {
        codes[(long long)r * cols + order[col]] = (unsigned char)code;
        err[(long long)r * count + i] = e;
      }
#pragma unroll
      for (int tt = 0; tt < GPTQ_SLOTS; tt++) {
        const int c = lane + 32 * tt;
        if (c > i && c < count) v[tt] -= e * ui[start + c];
      }
    }
  }
}
