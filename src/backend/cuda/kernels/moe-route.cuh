// Routing one token with one warp, shared by moe_route_kernel (moe-route.cu) and the fused decode
// kernel (moe-decode.cu): scores (softmax over all experts, sigmoid, or the logits themselves for
// top-k-then-softmax), the selection bias added to choose, group-limited choice, top-k by warp
// argmax (ties to the lower id, as the CPU reference), and the weights, in increasing expert order.
//
// Only PER_LANE = experts per lane (each lane keeps experts lane, lane + 32, ... in registers) is a
// compile-time choice. The rule's kinds are run-time values, uniform over the warp: routing is a
// few microseconds of shuffles either way, and one build per expert count keeps the number of
// NVRTC compilations a model (or a test) needs small.
#pragma once
#include "common.cuh"

#ifndef PER_LANE
#error "compile with -DPER_LANE=<experts per lane, a power of two>"
#endif

#define NO_EXPERT 0x7fffffff

// How a token picks its experts (RoutingParams): scoring 0 softmax, 1 sigmoid, 2 top-k softmax;
// bias_kind 0 none, 1 bf16, 2 f32; group_score 0 no groups, 1 a group's best, 2 the sum of its two best;
// softcap > 0: logits become softcap · tanh(logit / softcap) before they are scored.
struct RouteRule {
  int scoring;
  int bias_kind;
  int group_score;
  int logits_f32;
  int num_groups;
  int topk_groups;
  int normalize;
  float scale;
  float softcap;
};

// An L2 load (ld.global.cg): values written by other blocks of the running launch must not come
// from a stale L1 line or the read-only path.
__device__ __forceinline__ int load_cg(const int* p) {
  int v;
  asm volatile("ld.global.cg.s32 %0, [%1];" : "=r"(v) : "l"(p));
  return v;
}

__device__ __forceinline__ float load_cg(const float* p) {
  float v;
  asm volatile("ld.global.cg.f32 %0, [%1];" : "=f"(v) : "l"(p));
  return v;
}

__device__ __forceinline__ float logit_at(const void* logits, long long i, int logits_f32) {
  if (logits_f32) return load_cg(reinterpret_cast<const float*>(logits) + i);
  return bf16_to_f32(reinterpret_cast<const bf16*>(logits)[i]);
}

__device__ __forceinline__ float bias_at(const void* bias, int e, int bias_kind) {
  if (bias_kind == 1) return bf16_to_f32(reinterpret_cast<const bf16*>(bias)[e]);
  if (bias_kind == 2) return reinterpret_cast<const float*>(bias)[e];
  return 0.f;
}

__device__ __forceinline__ bool better(float v, int id, float best, int best_id) { return v > best || (v == best && id < best_id); }

// The warp's best (value, id) by `better`, carrying the candidate's score along; every lane gets it.
__device__ __forceinline__ void warp_best(float& v, int& id, float& score) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(FULL_MASK, v, o);
    const int oid = __shfl_xor_sync(FULL_MASK, id, o);
    const float os = __shfl_xor_sync(FULL_MASK, score, o);
    if (better(ov, oid, v, id)) {
      v = ov;
      id = oid;
      score = os;
    }
  }
}

// Routes token t (one warp, every lane calling): writes its top_k experts in increasing id to
// ids[t * top_k ...] and their weights likewise (global or shared memory). Lane s < top_k returns
// its pick's expert and `rank`, its place among the token's experts.
__device__ __forceinline__ int route_token(const void* logits, const void* bias, int* ids, float* weights, int t, int num_experts, int top_k,
                                           const RouteRule& rule, int& rank) {
  const int lane = threadIdx.x & 31;
  float score[PER_LANE], choice[PER_LANE];
  const long long row = (long long)t * num_experts;
#pragma unroll
  for (int i = 0; i < PER_LANE; i++) {
    const int e = i * 32 + lane;
    score[i] = e < num_experts ? logit_at(logits, row + e, rule.logits_f32) : NEG_INF;
    if (rule.softcap > 0.f && e < num_experts) score[i] = rule.softcap * tanhf(score[i] / rule.softcap);
  }
  if (rule.scoring == 0) {
    float m = NEG_INF;
#pragma unroll
    for (int i = 0; i < PER_LANE; i++) m = fmaxf(m, score[i]);
    m = warp_max(m);
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < PER_LANE; i++) {
      score[i] = i * 32 + lane < num_experts ? expf(score[i] - m) : 0.f;
      sum += score[i];
    }
    sum = warp_sum(sum);
#pragma unroll
    for (int i = 0; i < PER_LANE; i++) score[i] = score[i] / sum;
  } else if (rule.scoring == 1) {
#pragma unroll
    for (int i = 0; i < PER_LANE; i++) score[i] = 1.f / (1.f + expf(-score[i]));
  }
#pragma unroll
  for (int i = 0; i < PER_LANE; i++) {
    const int e = i * 32 + lane;
    choice[i] = e < num_experts ? score[i] + bias_at(bias, e, rule.bias_kind) : NEG_INF;
  }

  if (rule.group_score != 0) {
    // Group g's score lands in lane g; the topk_groups best groups are kept, the others' experts dropped.
    const int group_size = num_experts / rule.num_groups;
    float group_score = NEG_INF;
    for (int g = 0; g < rule.num_groups; g++) {
      float b1 = NEG_INF, b2 = NEG_INF;
#pragma unroll
      for (int i = 0; i < PER_LANE; i++) {
        const int e = i * 32 + lane;
        if (e < num_experts && e / group_size == g) {
          if (choice[i] > b1) {
            b2 = b1;
            b1 = choice[i];
          } else if (choice[i] > b2) {
            b2 = choice[i];
          }
        }
      }
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) {
        const float o1 = __shfl_xor_sync(FULL_MASK, b1, o), o2 = __shfl_xor_sync(FULL_MASK, b2, o);
        const float hi = fmaxf(b1, o1), lo = fmaxf(fminf(b1, o1), fmaxf(b2, o2));
        b1 = hi;
        b2 = lo;
      }
      if (lane == g) group_score = rule.group_score == 1 ? b1 : b1 + b2;
    }
    unsigned int kept = 0;
    for (int r = 0; r < rule.topk_groups; r++) {
      const bool candidate = lane < rule.num_groups && !((kept >> lane) & 1u);
      float v = candidate ? group_score : NEG_INF, unused = 0.f;
      int id = candidate ? lane : NO_EXPERT;
      warp_best(v, id, unused);
      kept |= 1u << id;
    }
#pragma unroll
    for (int i = 0; i < PER_LANE; i++) {
      const int e = i * 32 + lane;
      if (e < num_experts && !((kept >> (e / group_size)) & 1u)) choice[i] = NEG_INF;
    }
  }

  // Top-k: lane s keeps the s-th pick; `taken` marks this lane's experts already picked.
  unsigned int taken = 0;
  int my_id = NO_EXPERT;
  float my_score = 0.f;
  for (int s = 0; s < top_k; s++) {
    float v = NEG_INF, sc = 0.f;
    int id = NO_EXPERT;
#pragma unroll
    for (int i = 0; i < PER_LANE; i++) {
      const int e = i * 32 + lane;
      if (e < num_experts && !((taken >> i) & 1u) && better(choice[i], e, v, id)) {
        v = choice[i];
        id = e;
        sc = score[i];
      }
    }
    warp_best(v, id, sc);
    if (lane == s) {
      my_id = id;
      my_score = sc;
    }
    if ((id & 31) == lane) taken |= 1u << (id >> 5);
  }

  float w = lane < top_k ? my_score : 0.f;
  if (rule.scoring == 2) {
    const float m_top = warp_max(lane < top_k ? w : NEG_INF);
    w = lane < top_k ? expf(w - m_top) : 0.f;
    w = w / warp_sum(w);
  }
  // DeepSeek-V3 adds 1e-20 to the sum; no other router's sum is small enough for it to matter.
  if (rule.normalize) w = w / (warp_sum(w) + 1e-20f);
  w *= rule.scale;
  rank = 0;
  for (int j = 0; j < top_k; j++) rank += __shfl_sync(FULL_MASK, my_id, j) < my_id;
  if (lane < top_k) {
    ids[(long long)t * top_k + rank] = my_id;
    weights[(long long)t * top_k + rank] = w;
  }
  return my_id;
}
