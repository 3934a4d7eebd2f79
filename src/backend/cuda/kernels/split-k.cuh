// Split-K without a launch of its own, for the quantized GEMVs and GEMMs (quantized-linear.cu,
// gemv-mma.cu, quantized-gemm.cu, marlin-gemm.cu). With `splits` > 1 each split of an output tile
// writes its f32 partial sums to partial [splits, rows, n], and the last split of the tile to
// finish (last_to_arrive, common.cuh, on the tile's own counter) adds them, in split order, plus
// the bias, into out [rows, n] bf16. A separate reduction kernel used to follow every split launch:
// one more dependent launch for a few kilobytes, at every layer of a decode step.
#pragma once
#include "common.cuh"

// Every thread of every split's CTA calls it once its partial sums are written. The tile is batch
// rows [r_begin, r_end) by output columns [c_begin, c_end), already clipped to [rows, n].
__device__ __forceinline__ void split_sum_if_last(bf16* out, const float* partial, const bf16* bias, int rows, int n, int splits, int r_begin,
                                                  int r_end, int c_begin, int c_end, unsigned int* counter) {
  if (!last_to_arrive(counter, splits)) return;
  const long long total = (long long)rows * n;
  const int width = c_end - c_begin;
  for (int i = threadIdx.x; i < (r_end - r_begin) * width; i += blockDim.x) {
    const long long at = (long long)(r_begin + i / width) * n + c_begin + i % width;
    float v = 0.f;
#pragma unroll 4
    for (int s = 0; s < splits; s++) v += load_from_l2(partial + s * total + at);  // unrolled: the loads in flight together
    out[at] = f32_to_bf16(v + (bias == nullptr ? 0.f : bf16_to_f32(bias[c_begin + i % width])));
  }
}
