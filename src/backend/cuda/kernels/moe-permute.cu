// Inputs of act-order experts (GPTQ desc_act: each expert's columns stored in an order of its
// own, so that its scale groups are runs of columns) gathered into that order, one row per
// (token, slot) pair: the expert GEMVs and GEMMs then stream the codes as for experts in input
// column order. The gather reads `cols` values and their permutation per row, against the
// expert's rows × cols codes the row's product reads.
#include "common.cuh"

// grid (rows, ceil(cols / blockDim)): out[q, j] = in[src, perm[e · cols + j]] for each row q whose
// expert e = ids[pair] - first is held here (0 ≤ e < count); other rows are left unwritten (no
// expert kernel of this device reads them). by_pair 1: rows are pairs (pair = q, token q / top_k's
// slot q % top_k), src = q / top_k: the gate/up input x [tokens, cols], read back by pair with
// top_k 1. by_pair 0: rows are places (expert-sorted, pair = sorted_pairs[q]), src = q: the down
// input h [places, cols]. perm [count, cols]; ids [pairs]; sorted_pairs [pairs].
extern "C" __global__ void moe_permute_input_kernel(bf16* __restrict__ out, const bf16* __restrict__ in, const int* __restrict__ perm,
                                                    const int* __restrict__ ids, const int* __restrict__ sorted_pairs, int first, int count,
                                                    int top_k, int cols, int by_pair) {
  PDL_PROLOGUE();
  const int q = blockIdx.x;
  const int j = blockIdx.y * blockDim.x + threadIdx.x;
  if (j >= cols) return;
  const int pair = by_pair ? q : sorted_pairs[q];
  const int e = ids[pair] - first;
  if (e < 0 || e >= count) return;
  const long long src = by_pair ? q / top_k : q;
  out[(long long)q * cols + j] = in[src * cols + perm[(long long)e * cols + j]];
}

// grid (pairs, ceil(cols / blockDim)): the inputs of input-weighted routes (Llama 4, whose experts
// run on w · x): out[pair, j] = weights[pair] · in[pair / top_k, j], rounded to bf16 once, read by
// pair (top_k 1) by the expert kernels; unit[pair] = 1, the weights the sum then adds each expert's
// output with. in [tokens, cols]; weights, unit [pairs].
extern "C" __global__ void moe_weight_inputs_kernel(bf16* __restrict__ out, float* __restrict__ unit, const bf16* __restrict__ in,
                                                    const float* __restrict__ weights, int top_k, int cols) {
  PDL_PROLOGUE();
  const int pair = blockIdx.x;
  const int j = blockIdx.y * blockDim.x + threadIdx.x;
  if (j == 0) unit[pair] = 1.f;
  if (j >= cols) return;
  out[(long long)pair * cols + j] = f32_to_bf16(weights[pair] * bf16_to_f32(in[(long long)(pair / top_k) * cols + j]));
}
