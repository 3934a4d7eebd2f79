// Batched multi-LoRA (SGMV/BGMV style): each token of a step runs with its own adapter slot (or
// none, -1), read from the step's lora_slots, so requests for different adapters and the base model
// share one step. Two launches per adapted linear: the shrink v = x · Aᵀ into float32 rank space,
// then the expand out += v · Bᵀ into the linear's bf16 output. The grids depend on the step's shape
// only (a CUDA graph replays them whatever the slots); what a token skips is decided in the kernels.
//
// Weights, per linear: a [slots, S, RP, in] (slice s's A in its first rank rows), bt [slots, RP,
// out] (Bᵀ with the adapter's scale folded in: row k holds column k of every slice's B, so that
// consecutive threads of the expand read consecutive outputs), ranks [slots]; RP is the max rank
// rounded up to 8. v [tokens, S, RP] float32.
#include "common.cuh"

#define SHRINK_TOKENS 4
#define EXPAND_TOKENS 8

// grid (ceil(num_tokens / SHRINK_TOKENS), S), block a multiple of 32. Warp w computes rank rows
// w, w + warps, ... of slice blockIdx.y for the block's tokens. Tokens of one adapter share each
// 16-byte load of its A row (a prefill chunk, or a decode batch of one adapter, reads A once per
// block); each distinct adapter of the block's tokens is one pass.
extern "C" __global__ void lora_shrink_kernel(float* __restrict__ v, const uint4* __restrict__ x, const uint4* __restrict__ a,
                                              const int* __restrict__ slots, const int* __restrict__ ranks, int num_tokens, int in8,
                                              int rp, int num_slices) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const int t0 = blockIdx.x * SHRINK_TOKENS, s = blockIdx.y;
  int slot[SHRINK_TOKENS];
#pragma unroll
  for (int j = 0; j < SHRINK_TOKENS; j++) slot[j] = t0 + j < num_tokens ? slots[t0 + j] : -1;
#pragma unroll
  for (int lead = 0; lead < SHRINK_TOKENS; lead++) {
    const int adapter = slot[lead];
    // Token `lead` starts a pass when it has an adapter that no earlier token of the block has.
    bool first = adapter >= 0;
#pragma unroll
    for (int j = 0; j < lead; j++) first = first && slot[j] != adapter;
    if (!first) continue;
    const int rank = ranks[adapter];
    for (int k = warp; k < rank; k += warps) {
      const uint4* a_row = a + (((long long)adapter * num_slices + s) * rp + k) * in8;
      float acc[SHRINK_TOKENS];
#pragma unroll
      for (int j = 0; j < SHRINK_TOKENS; j++) acc[j] = 0.f;
      for (int c = lane; c < in8; c += 32) {
        float w[8];
        unpack8(load_streaming(a_row + c), w);
#pragma unroll
        for (int j = lead; j < SHRINK_TOKENS; j++) {
          if (slot[j] != adapter) continue;
          float xv[8];
          unpack8(x[(long long)(t0 + j) * in8 + c], xv);
#pragma unroll
          for (int i = 0; i < 8; i++) acc[j] = fmaf(w[i], xv[i], acc[j]);
        }
      }
#pragma unroll
      for (int j = lead; j < SHRINK_TOKENS; j++) {
        if (slot[j] != adapter) continue;
        const float sum = warp_sum(acc[j]);
        if (lane == 0) v[((long long)(t0 + j) * num_slices + s) * rp + k] = sum;
      }
    }
  }
}

// grid (ceil(out_dim / blockDim), ceil(num_tokens / EXPAND_TOKENS)). Thread o adds, for each of
// the block's tokens with an adapter, Σ_k v[t, slice(o), k] · bt[slot, k, o] to out[t, o] (in f32,
// rounded once). Output o belongs to slice (o ≥ end0) + (o ≥ end1): the slices end at end0, end1
// and out_dim (a linear of fewer slices passes out_dim for the missing ends).
extern "C" __global__ void lora_expand_kernel(bf16* __restrict__ out, const float* __restrict__ v, const bf16* __restrict__ bt,
                                              const int* __restrict__ slots, const int* __restrict__ ranks, int num_tokens, int out_dim,
                                              int rp, int num_slices, int end0, int end1) {
  const int o = blockIdx.x * blockDim.x + threadIdx.x;
  if (o >= out_dim) return;
  const int s = (o >= end0) + (o >= end1);
  const int t0 = blockIdx.y * EXPAND_TOKENS;
  for (int j = 0; j < EXPAND_TOKENS && t0 + j < num_tokens; j++) {
    const int t = t0 + j;
    const int adapter = slots[t];
    if (adapter < 0) continue;
    const int rank = ranks[adapter];
    const float* vt = v + ((long long)t * num_slices + s) * rp;
    const bf16* b = bt + (long long)adapter * rp * out_dim + o;
    float sum = 0.f;
    for (int k = 0; k < rank; k++) sum = fmaf(vt[k], bf16_to_f32(b[(long long)k * out_dim]), sum);
    const long long at = (long long)t * out_dim + o;
    out[at] = f32_to_bf16(bf16_to_f32(out[at]) + sum);
  }
}
