// LLM.int8() (Dettmers et al. 2022) for a linear layer with int8 weights (signed codes, one
// float32 scale per output row: bitsandbytes' SCB / 127), as the CPU twin
// (src/backend/cpu/ops/llm-int8-matmul.ts) defines it, in four launches per matmul:
//
// 1. llm_int8_row_stats_kernel: each activation row's absmax over its values below the threshold,
//    and a flag on every input column where some row reaches it (the outlier columns);
// 2. llm_int8_outlier_list_kernel: the flagged columns compacted, in order, into a list on the
//    device (no host round trip: the count is read by the kernels, so the step stays graph-capturable);
// 3. llm_int8_quantize_kernel: activations to int8, rint(x · 127 / absmax), 0 in outlier columns;
// 4. llm_int8_gemv_kernel (up to 8 rows: a warp per output row streams 16 codes at a time
//    through __dp4a) or llm_int8_gemm_kernel (64 × 64 output tiles, int8 tiles in shared memory,
//    __dp4a), each with the same epilogue: int32 sum × row scale × weight scale, plus the outlier
//    columns' activations (bf16) times the dequantized weight columns, plus the bias. With
//    tensor-core sums (llm-int8.ts), cuBLAS's int8 GEMM writes the same exact int32 sums and
//    llm_int8_epilogue_kernel applies the same float epilogue to them.
#include "common.cuh"

// nvcc-check: -DROWS=1
// nvcc-check: -DROWS=8

#ifndef ROWS
#define ROWS 1
#endif
#define GEMM_TILE 64
#define GEMM_TILE_K 64

__device__ __forceinline__ int warp_sum_int(int v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
  return v;
}

// grid rows, block a multiple of 32 (at most 1024). outlier [k] zeroed before the launch.
extern "C" __global__ void llm_int8_row_stats_kernel(const bf16* __restrict__ x, float* __restrict__ absmax, int* __restrict__ outlier, int k,
                                                      float threshold) {
  PDL_PROLOGUE();
  __shared__ float partial[32];
  const bf16* xr = x + (long long)blockIdx.x * k;
  float m = 0.f;
  for (int c = threadIdx.x; c < k; c += blockDim.x) {
    const float v = fabsf(bf16_to_f32(xr[c]));
    if (threshold > 0.f && v >= threshold) outlier[c] = 1;
    else m = fmaxf(m, v);
  }
  m = warp_max(m);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) partial[warp] = m;
  __syncthreads();
  if (warp == 0) {
    m = lane < (int)(blockDim.x >> 5) ? partial[lane] : 0.f;
    m = warp_max(m);
    if (lane == 0) absmax[blockIdx.x] = m;
  }
}

// One block of 1024 threads: list [k] = the flagged columns in increasing order, count[0] their number.
extern "C" __global__ void __launch_bounds__(1024) llm_int8_outlier_list_kernel(const int* __restrict__ outlier, int* __restrict__ list,
                                                                               int* __restrict__ count, int k) {
  PDL_PROLOGUE();
  __shared__ int warp_counts[32];
  __shared__ int base;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  if (threadIdx.x == 0) base = 0;
  __syncthreads();
  for (int start = 0; start < k; start += blockDim.x) {
    const int c = start + threadIdx.x;
    const bool flag = c < k && outlier[c] != 0;
    const unsigned int ballot = __ballot_sync(FULL_MASK, flag);
    if (lane == 0) warp_counts[warp] = __popc(ballot);
    __syncthreads();
    int before = base;
    for (int w = 0; w < warp; w++) before += warp_counts[w];
    if (flag) list[before + __popc(ballot & ((1u << lane) - 1u))] = c;
    __syncthreads();
    if (threadIdx.x == 0) {
      for (int w = 0; w < warps; w++) base += warp_counts[w];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) count[0] = base;
}

// xq [rows, k] = rint(x · (127 / absmax[row])) clamped to ±127, 0 in outlier columns and rows of zeros.
extern "C" __global__ void llm_int8_quantize_kernel(signed char* __restrict__ xq, const bf16* __restrict__ x, const float* __restrict__ absmax,
                                                     const int* __restrict__ outlier, int rows, int k) {
  PDL_PROLOGUE();
  const long long total = (long long)rows * k;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
    const int row = (int)(i / k), col = (int)(i - (long long)row * k);
    const float m = absmax[row];
    int q = 0;
    if (outlier[col] == 0 && m > 0.f) {
      const float inverse = 127.f / m;
      q = max(-127, min(127, (int)rintf(bf16_to_f32(x[i]) * inverse)));
    }
    xq[i] = (signed char)q;
  }
}

// The epilogue of both products for output (row r, feature o): the int8 sum scaled, the outlier
// columns in full precision, the bias.
__device__ __forceinline__ float outlier_sum(const bf16* __restrict__ x_row, const signed char* __restrict__ w_row, const int* __restrict__ list,
                                             int begin, int end, int step, float scale) {
  float s = 0.f;
  for (int j = begin; j < end; j += step) {
    const int c = list[j];
    s = fmaf(bf16_to_f32(x_row[c]), (float)w_row[c] * scale, s);
  }
  return s;
}

// Output (r, o) of the tiled GEMM and of the tensor-core sums alike: the exact int32 sum scaled, the
// outlier columns in full precision, the bias; one expression, so both round the same.
__device__ __forceinline__ bf16 llm_int8_output(int sum, float row_scale, const bf16* __restrict__ x_row, const signed char* __restrict__ w_row,
                                                const int* __restrict__ list, int outliers, float scale, const bf16* __restrict__ bias, int o) {
  float v = (float)sum * row_scale * scale;
  v += outlier_sum(x_row, w_row, list, 0, outliers, 1, scale);
  if (bias != nullptr) v += bf16_to_f32(bias[o]);
  return f32_to_bf16(v);
}

// grid ceil(n / warps per block), block 128; out [ROWS, n]; k a multiple of 16.
extern "C" __global__ void __launch_bounds__(128) llm_int8_gemv_kernel(bf16* __restrict__ out, const signed char* __restrict__ xq, const bf16* __restrict__ x,
                                                                     const float* __restrict__ absmax, const int* __restrict__ list,
                                                                     const int* __restrict__ count, const signed char* __restrict__ codes,
                                                                     const float* __restrict__ scales, const bf16* __restrict__ bias, int n, int k) {
  PDL_PROLOGUE();
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= n) return;
  const signed char* w_row = codes + (long long)row * k;
  const int chunks = k / 16;
  int acc[ROWS];
#pragma unroll
  for (int r = 0; r < ROWS; r++) acc[r] = 0;
  for (int c = lane; c < chunks; c += 32) {
    const uint4 w = load_streaming(reinterpret_cast<const uint4*>(w_row) + c);
#pragma unroll
    for (int r = 0; r < ROWS; r++) {
      const uint4 a = reinterpret_cast<const uint4*>(xq + (long long)r * k)[c];
      acc[r] = __dp4a((int)a.x, (int)w.x, acc[r]);
      acc[r] = __dp4a((int)a.y, (int)w.y, acc[r]);
      acc[r] = __dp4a((int)a.z, (int)w.z, acc[r]);
      acc[r] = __dp4a((int)a.w, (int)w.w, acc[r]);
    }
  }
  const float scale = scales[row];
  const int outliers = count[0];
#pragma unroll
  for (int r = 0; r < ROWS; r++) {
    const int total = warp_sum_int(acc[r]);
    const float extra = warp_sum(outlier_sum(x + (long long)r * k, w_row, list, lane, outliers, 32, scale));
    if (lane == 0) {
      const float b = bias == nullptr ? 0.f : bf16_to_f32(bias[row]);
      out[(long long)r * n + row] = f32_to_bf16((float)total * (absmax[r] / 127.f) * scale + extra + b);
    }
  }
}

// grid (ceil(n / 64), ceil(rows / 64)), block 256: each thread 4 × 4 outputs of a 64 × 64 tile;
// out [rows, n]; k a multiple of 16.
extern "C" __global__ void __launch_bounds__(256) llm_int8_gemm_kernel(bf16* __restrict__ out, const signed char* __restrict__ xq, const bf16* __restrict__ x,
                                                                     const float* __restrict__ absmax, const int* __restrict__ list,
                                                                     const int* __restrict__ count, const signed char* __restrict__ codes,
                                                                     const float* __restrict__ scales, const bf16* __restrict__ bias, int rows, int n,
                                                                     int k) {
  PDL_PROLOGUE();
  // Four int8 values a word; one word of padding per row against bank conflicts.
  __shared__ int xs[GEMM_TILE][GEMM_TILE_K / 4 + 1];
  __shared__ int ws[GEMM_TILE][GEMM_TILE_K / 4 + 1];
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
  const int row0 = blockIdx.y * GEMM_TILE, col0 = blockIdx.x * GEMM_TILE;
  int acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 4; j++) acc[i][j] = 0;
  for (int k0 = 0; k0 < k; k0 += GEMM_TILE_K) {
    for (int i = threadIdx.x; i < GEMM_TILE * (GEMM_TILE_K / 4); i += blockDim.x) {
      const int t = i / (GEMM_TILE_K / 4), w = i % (GEMM_TILE_K / 4);
      const int kk = k0 + 4 * w;
      xs[t][w] = row0 + t < rows && kk < k ? *reinterpret_cast<const int*>(xq + (long long)(row0 + t) * k + kk) : 0;
      ws[t][w] = col0 + t < n && kk < k ? *reinterpret_cast<const int*>(codes + (long long)(col0 + t) * k + kk) : 0;
    }
    __syncthreads();
#pragma unroll 4
    for (int w = 0; w < GEMM_TILE_K / 4; w++) {
      int a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; i++) {
        a[i] = xs[ty * 4 + i][w];
        b[i] = ws[tx * 4 + i][w];
      }
#pragma unroll
      for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = __dp4a(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
  const int outliers = count[0];
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const int r = row0 + ty * 4 + i;
    if (r >= rows) continue;
    const float row_scale = absmax[r] / 127.f;
#pragma unroll
    for (int j = 0; j < 4; j++) {
      const int o = col0 + tx * 4 + j;
      if (o >= n) continue;
      out[(long long)r * n + o] = llm_int8_output(acc[i][j], row_scale, x + (long long)r * k, codes + (long long)o * k, list, outliers, scales[o], bias, o);
    }
  }
}

// The epilogue alone (llm_int8_output), over int32 sums acc [rows, n] that cuBLAS's int8 GEMM wrote:
// out [rows, n] as llm_int8_gemm_kernel computes it from its own (identical) sums. Grid-stride, one output a
// thread; x, absmax and out start at the slice's first row.
extern "C" __global__ void llm_int8_epilogue_kernel(bf16* __restrict__ out, const int* __restrict__ acc, const bf16* __restrict__ x,
                                                     const float* __restrict__ absmax, const int* __restrict__ list, const int* __restrict__ count,
                                                     const signed char* __restrict__ codes, const float* __restrict__ scales,
                                                     const bf16* __restrict__ bias, int rows, int n, int k) {
  PDL_PROLOGUE();
  const int outliers = count[0];
  const long long total = (long long)rows * n;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
    const int r = (int)(i / n), o = (int)(i - (long long)r * n);
    out[i] = llm_int8_output(acc[i], absmax[r] / 127.f, x + (long long)r * k, codes + (long long)o * k, list, outliers, scales[o], bias, o);
  }
}
