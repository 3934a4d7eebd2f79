// Dtype conversions: checkpoint weights to bf16 at load time, bf16 activations to f32 for toHost.
#include "common.cuh"

extern "C" __global__ void f32_to_bf16_kernel(bf16* __restrict__ out, const float* __restrict__ in, long long n) {
  PDL_PROLOGUE();
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    out[i] = f32_to_bf16(in[i]);
}

extern "C" __global__ void f16_to_bf16_kernel(bf16* __restrict__ out, const unsigned short* __restrict__ in, long long n) {
  PDL_PROLOGUE();
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    out[i] = f32_to_bf16(f16_to_f32(in[i]));
}

extern "C" __global__ void bf16_to_f32_kernel(float* __restrict__ out, const bf16* __restrict__ in, long long n) {
  PDL_PROLOGUE();
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    out[i] = bf16_to_f32(in[i]);
}
