// Mamba-2's selective scan (Backend.selectiveScan), the CUDA twin of backend/cpu/ops/selective-scan.ts:
// each sequence's chunk, token by token, from the state in its slot (float32, after the conv state:
// [heads, head dim, state size]), which it leaves updated. Activations are bf16, the state and the
// per-head constants float32, as transformers runs its scan in float32 whatever the model's dtype.
#include "common.cuh"

// A chunk whose sequence has no earlier token starts from a zero state.
__device__ __forceinline__ bool scan_starts_fresh(const int* query_start, const int* seq_lens, int s) {
  return seq_lens[s] == query_start[s + 1] - query_start[s];
}

// xbc [tokens, H P + 2 G N] (x, every group's B, every group's C), dt [tokens, H] raw, z and out [tokens, H P];
// a_log, dt_bias, d [H] float32. grid (sequences, H), a block of whole warps and 2 N floats of shared memory
// (the token's B and C of the head's group). Warp w takes the head's state rows w, w + warps, ..., its lanes the
// row's N values, so every state access is coalesced; a row's output is a warp sum.
extern "C" __global__ void selective_scan_kernel(bf16* __restrict__ out, const bf16* __restrict__ xbc, const bf16* __restrict__ dt,
                                                 const bf16* __restrict__ z, const float* __restrict__ a_log,
                                                 const float* __restrict__ dt_bias, const float* __restrict__ d,
                                                 float* __restrict__ state, const int* __restrict__ query_start,
                                                 const int* __restrict__ seq_lens, const int* __restrict__ state_slots, int slot_stride,
                                                 int conv_elements, int num_heads, int head_dim, int num_groups, int state_size,
                                                 float dt_min, float dt_max) {
  PDL_PROLOGUE();
  extern __shared__ float bc[];
  float* B = bc;
  float* C = bc + state_size;
  const int s = blockIdx.x, h = blockIdx.y;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const int g = h / (num_heads / num_groups);
  const int x_width = num_heads * head_dim;
  const int width = x_width + 2 * num_groups * state_size;
  float* S = state + (long long)state_slots[s] * slot_stride + conv_elements + (long long)h * head_dim * state_size;
  if (scan_starts_fresh(query_start, seq_lens, s)) {
    for (int i = threadIdx.x; i < head_dim * state_size; i += blockDim.x) S[i] = 0.f;
  }
  const float A = -expf(a_log[h]);
  const float D = d[h];
  for (int t = query_start[s]; t < query_start[s + 1]; t++) {
    const bf16* row = xbc + (long long)t * width;
    for (int k = threadIdx.x; k < state_size; k += blockDim.x) {
      B[k] = bf16_to_f32(row[x_width + g * state_size + k]);
      C[k] = bf16_to_f32(row[x_width + (num_groups + g) * state_size + k]);
    }
    __syncthreads();
    const float raw = bf16_to_f32(dt[(long long)t * num_heads + h]) + dt_bias[h];
    const float delta = fminf(dt_max, fmaxf(dt_min, raw > 20.f ? raw : log1pf(expf(raw))));
    const float decay = expf(A * delta);
    for (int i = warp; i < head_dim; i += warps) {
      const float x = bf16_to_f32(row[h * head_dim + i]);
      const float dx = delta * x;
      float* Si = S + (long long)i * state_size;
      float y = 0.f;
      for (int k = lane; k < state_size; k += 32) {
        const float v = fmaf(Si[k], decay, dx * B[k]);
        Si[k] = v;
        y = fmaf(v, C[k], y);
      }
      y = warp_sum(y);
      if (lane == 0) {
        const long long at = (long long)t * x_width + h * head_dim + i;
        const float gate = bf16_to_f32(z[at]);
        out[at] = f32_to_bf16(fmaf(D, x, y) * (gate / (1.f + expf(-gate))));
      }
    }
    __syncthreads();  // the next token overwrites B and C
  }
}
