// Gated DeltaNet's and Kimi Delta Attention's ops (layers/gated-deltanet.ts), the CUDA twins of backend/cpu/ops/gated-delta-net.ts:
// the short causal convolution (Mamba-2's too) and the gated delta rule, each continuing from its part of the
// sequence's state slot (float32: [conv kernel - 1, channels], then [value heads, key dim, value dim]),
// the gated output norm, and the attention output gate. Activations are bf16 and rounded where
// transformers' bf16 modules round them.
#include "common.cuh"

#define MAX_CONV_KERNEL 8

__device__ __forceinline__ float round_bf16(float v) { return bf16_to_f32(f32_to_bf16(v)); }

// A chunk whose sequence has no earlier token starts from a zero state.
__device__ __forceinline__ bool starts_fresh(const int* query_start, const int* seq_lens, int s) {
  return seq_lens[s] == query_start[s + 1] - query_start[s];
}

// out = silu(conv(x) + bias) per sequence, x and out [tokens, channels], weight [channels, kernel] (kernel <= MAX_CONV_KERNEL),
// bias [channels] or null (Mamba-2's conv has one, Gated DeltaNet's none). grid (sequences, ceil(channels / blockDim)): a thread per (sequence, channel) walks the chunk's tokens in order
// with the kernel - 1 previous inputs in registers, then leaves the latest ones in the slot's conv state.
extern "C" __global__ void causal_conv1d_kernel(bf16* __restrict__ out, const bf16* __restrict__ x, const bf16* __restrict__ weight,
                                                const bf16* __restrict__ bias, float* __restrict__ state, const int* __restrict__ query_start,
                                                const int* __restrict__ seq_lens, const int* __restrict__ state_slots, int slot_stride,
                                                int channels, int kernel) {
  PDL_PROLOGUE();
  const int s = blockIdx.x, c = blockIdx.y * blockDim.x + threadIdx.x;
  if (c >= channels) return;
  const int history = kernel - 1;
  float* conv = state + (long long)state_slots[s] * slot_stride;
  const bool fresh = starts_fresh(query_start, seq_lens, s);
  float window[MAX_CONV_KERNEL], w[MAX_CONV_KERNEL];
  for (int j = 0; j < history; j++) window[j] = fresh ? 0.f : conv[j * channels + c];
  for (int j = 0; j < kernel; j++) w[j] = bf16_to_f32(weight[c * kernel + j]);
  const float b = bias == nullptr ? 0.f : bf16_to_f32(bias[c]);
  for (int t = query_start[s]; t < query_start[s + 1]; t++) {
    const float input = bf16_to_f32(x[(long long)t * channels + c]);
    float sum = b;
    for (int j = 0; j < history; j++) sum = fmaf(w[j], window[j], sum);
    // The convolution's bf16 output, then silu of it (rounded again), as F.conv1d and ACT2FN in bf16.
    const float y = round_bf16(fmaf(w[history], input, sum));
    out[(long long)t * channels + c] = f32_to_bf16(y / (1.f + __expf(-y)));
    for (int j = 0; j + 1 < history; j++) window[j] = window[j + 1];
    if (history > 0) window[history - 1] = input;
  }
  for (int j = 0; j < history; j++) conv[j * channels + c] = window[j];
}

// The gated delta rule (Backend.gatedDeltaRule): qkv [tokens, 2 Hk dk + Hv dv], ba [tokens, Hv + Hv head_decays]
// (b, then a), a_log [Hv] and dt_bias [Hv head_decays] float32, out [tokens, Hv dv]. head_decays is 1 (Gated
// DeltaNet: one decay per head) or key_dim (Kimi Delta Attention: row i of the state decays by its own g_i).
// grid (sequences, Hv), a block of at least value_dim threads (a multiple of 32) and 3 * key_dim floats of shared
// memory (q, k, each row's decay): thread j owns column j of the head's state S [dk, dv], kept in the slot in
// float32, and the block walks the chunk's tokens in order.
extern "C" __global__ void gated_delta_rule_kernel(bf16* __restrict__ out, const bf16* __restrict__ qkv, const bf16* __restrict__ ba,
                                                   const float* __restrict__ a_log, const float* __restrict__ dt_bias,
                                                   float* __restrict__ state, const int* __restrict__ query_start,
                                                   const int* __restrict__ seq_lens, const int* __restrict__ state_slots, int slot_stride,
                                                   int conv_elements, int num_key_heads, int num_value_heads, int key_dim, int value_dim,
                                                   int head_decays) {
  PDL_PROLOGUE();
  extern __shared__ float qk[];
  float* q = qk;
  float* k = qk + key_dim;
  float* decay = qk + 2 * key_dim;
  const int s = blockIdx.x, h = blockIdx.y, j = threadIdx.x;
  const int kh = h / (num_value_heads / num_key_heads);
  const int width = 2 * num_key_heads * key_dim + num_value_heads * value_dim;
  float* S = state + (long long)state_slots[s] * slot_stride + conv_elements + (long long)h * key_dim * value_dim;
  if (starts_fresh(query_start, seq_lens, s) && j < value_dim) {
    for (int i = 0; i < key_dim; i++) S[i * value_dim + j] = 0.f;
  }
  const float A = expf(a_log[h]);
  const float scale = rsqrtf((float)key_dim);
  const int gates = num_value_heads * (1 + head_decays);
  for (int t = query_start[s]; t < query_start[s + 1]; t++) {
    const bf16* row = qkv + (long long)t * width;
    const bf16* a_row = ba + (long long)t * gates + num_value_heads + h * head_decays;
    float qq = 0.f, kk = 0.f;
    for (int i = j; i < key_dim; i += blockDim.x) {
      const float qi = bf16_to_f32(row[kh * key_dim + i]);
      const float ki = bf16_to_f32(row[(num_key_heads + kh) * key_dim + i]);
      q[i] = qi;
      k[i] = ki;
      qq += qi * qi;
      kk += ki * ki;
      const int d = head_decays == 1 ? 0 : i;
      const float a = bf16_to_f32(a_row[d]) + dt_bias[h * head_decays + d];
      decay[i] = expf(-A * (a > 20.f ? a : log1pf(expf(a))));
    }
    // block_sum's barriers also publish q, k and the decays to the whole block.
    qq = block_sum(qq);
    kk = block_sum(kk);
    const float q_scale = scale * rsqrtf(qq + 1e-6f), k_scale = rsqrtf(kk + 1e-6f);
    const float b = bf16_to_f32(ba[(long long)t * gates + h]);
    const float beta = 1.f / (1.f + expf(-b));
    if (j < value_dim) {
      // Decay S, read what it recalls for k, then write the β-weighted correction and read for q.
      float recalled = 0.f;
      for (int i = 0; i < key_dim; i++) {
        const float v = S[i * value_dim + j] * decay[i];
        S[i * value_dim + j] = v;
        recalled = fmaf(v, k[i] * k_scale, recalled);
      }
      const float delta = (bf16_to_f32(row[2 * num_key_heads * key_dim + h * value_dim + j]) - recalled) * beta;
      float o = 0.f;
      for (int i = 0; i < key_dim; i++) {
        const float v = fmaf(k[i] * k_scale, delta, S[i * value_dim + j]);
        S[i * value_dim + j] = v;
        o = fmaf(v, q[i] * q_scale, o);
      }
      out[((long long)t * num_value_heads + h) * value_dim + j] = f32_to_bf16(o);
    }
    __syncthreads();  // the next token overwrites q, k and the decays
  }
}

// out = x / rms(x) * weight * act(gate) over each group of `width` columns, x, gate and out [rows, groups * width],
// weight [width]; grid rows * groups, a block of a multiple of 32 threads. act is silu, rounded as transformers'
// bf16 Qwen3NextRMSNormGated (the normalized x and its product with the weight bf16, silu(gate) float32), or with
// sigmoid_gate sigmoid, in float32 rounded once as KimiLinearRMSNormGated (FLA's) computes it.
extern "C" __global__ void gated_rms_norm_kernel(bf16* __restrict__ out, const bf16* __restrict__ x, const bf16* __restrict__ gate,
                                                 const bf16* __restrict__ weight, int width, float eps, int sigmoid_gate) {
  PDL_PROLOGUE();
  const long long at = (long long)blockIdx.x * width;
  float ss = 0.f;
  for (int i = threadIdx.x; i < width; i += blockDim.x) {
    const float v = bf16_to_f32(x[at + i]);
    ss += v * v;
  }
  const float inv = rsqrtf(block_sum(ss) / width + eps);
  for (int i = threadIdx.x; i < width; i += blockDim.x) {
    const float z = bf16_to_f32(gate[at + i]);
    const float sigmoid = 1.f / (1.f + expf(-z));
    if (sigmoid_gate) {
      out[at + i] = f32_to_bf16(bf16_to_f32(weight[i]) * bf16_to_f32(x[at + i]) * inv * sigmoid);
    } else {
      const float scaled = round_bf16(bf16_to_f32(weight[i]) * round_bf16(bf16_to_f32(x[at + i]) * inv));
      out[at + i] = f32_to_bf16(scaled * z * sigmoid);
    }
  }
}
