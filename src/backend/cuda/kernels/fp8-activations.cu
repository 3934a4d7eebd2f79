// Dynamic per-token FP8 activations for W8A8 GEMMs (cublas-lt.ts): each row of x (a token's
// activations) gets its own scale max|x| / 448 (1 for a row of zeros) and its values the e4m3 codes
// of x / scale, ties to even, the quotient a float32 division, as the CPU twin
// (backend/cpu/ops/fp8-activations.ts) computes them. One block a row, 16-byte loads; the row is
// read twice (its maximum, then its codes), the second time from L1/L2.
#include "common.cuh"

// codes [rows, cols] e4m3, scales f32 [rows], x [rows, cols] bf16; cols a multiple of 8. grid (rows).
extern "C" __global__ void quantize_rows_e4m3_kernel(uint2* __restrict__ codes, float* __restrict__ scales, const uint4* __restrict__ x, int cols) {
  PDL_PROLOGUE();
  const int chunks = cols / 8;
  const uint4* row = x + (long long)blockIdx.x * chunks;
  float amax = 0.f;
  for (int c = threadIdx.x; c < chunks; c += blockDim.x) {
    float v[8];
    unpack8(row[c], v);
#pragma unroll
    for (int i = 0; i < 8; i++) amax = fmaxf(amax, fabsf(v[i]));
  }
  amax = block_max(amax);
  const float s = kv_head_scale<1>(amax);
  if (threadIdx.x == 0) scales[blockIdx.x] = s;
  uint2* out = codes + (long long)blockIdx.x * chunks;
  for (int c = threadIdx.x; c < chunks; c += blockDim.x) {
    float v[8];
    unpack8(row[c], v);
    unsigned int q[8];
#pragma unroll
    for (int i = 0; i < 8; i++) q[i] = f32_to_e4m3(v[i] / s);
    out[c] = make_uint2(q[0] | (q[1] << 8) | (q[2] << 16) | (q[3] << 24), q[4] | (q[5] << 8) | (q[6] << 16) | (q[7] << 24));
  }
}
