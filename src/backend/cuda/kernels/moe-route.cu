// Mixture-of-experts routing, one launch per MoE layer and step. Each warp routes one token:
// scores (softmax over all experts, sigmoid, or the logits themselves for top-k-then-softmax), the
// selection bias added to choose, group-limited choice, top-k by warp argmax (ties to the lower
// id, as the CPU reference), and the weights, written in increasing expert order. Then the last
// block to finish groups the step's (token, slot) pairs by expert for the expert kernels: offsets
// of each expert's run in an expert-sorted order, each pair's place in it, and a table of tiles
// (expert, first place) of at most `tile_rows` pairs that the expert kernels' blocks look up. No
// host synchronization and a fixed grid: the grouping block also resets the completion counter,
// so the launch replays in a CUDA graph.
//
// Specialized by PER_LANE = ceil(numExperts / 32) (each lane keeps experts lane, lane + 32, ... in
// registers), SCORING (0 softmax, 1 sigmoid, 2 top-k softmax), BIAS (selection bias: 0 none, 1
// bf16, 2 f32), GROUP_SCORE (0 no groups, 1 the group's best, 2 the sum of its two best) and
// LOGITS_F32 (router logits in f32 rather than bf16).
#include "common.cuh"

// nvcc-check: -DPER_LANE=1 -DSCORING=0 -DBIAS=0 -DGROUP_SCORE=0 -DLOGITS_F32=0
// nvcc-check: -DPER_LANE=4 -DSCORING=0 -DBIAS=0 -DGROUP_SCORE=1 -DLOGITS_F32=1
// nvcc-check: -DPER_LANE=8 -DSCORING=1 -DBIAS=2 -DGROUP_SCORE=2 -DLOGITS_F32=1
// nvcc-check: -DPER_LANE=1 -DSCORING=2 -DBIAS=1 -DGROUP_SCORE=0 -DLOGITS_F32=0
// nvcc-check: -DPER_LANE=32 -DSCORING=0 -DBIAS=0 -DGROUP_SCORE=0 -DLOGITS_F32=0

#ifndef PER_LANE
#error "compile with -DPER_LANE=<ceil(experts / 32)>"
#endif

#define WARPS 8
#define THREADS (WARPS * 32)
#define MAX_EXPERTS 1024
#define EXPERTS_PER_THREAD (MAX_EXPERTS / THREADS)
#define NO_EXPERT 0x7fffffff

__device__ __forceinline__ float logit_at(const void* logits, long long i) {
#if LOGITS_F32
  return reinterpret_cast<const float*>(logits)[i];
#else
  return bf16_to_f32(reinterpret_cast<const bf16*>(logits)[i]);
#endif
}

__device__ __forceinline__ float bias_at(const void* bias, int e) {
#if BIAS == 1
  return bf16_to_f32(reinterpret_cast<const bf16*>(bias)[e]);
#elif BIAS == 2
  return reinterpret_cast<const float*>(bias)[e];
#else
  return 0.f;
#endif
}

// An L2 load: ids written by other blocks of this launch must not come from a stale L1 line.
__device__ __forceinline__ int load_cg(const int* p) {
  int v;
  asm volatile("ld.global.cg.s32 %0, [%1];" : "=r"(v) : "l"(p));
  return v;
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

// Exclusive prefix sum of one value per thread over the block; every thread must call it.
__device__ __forceinline__ int block_exclusive_scan(int v) {
  __shared__ int warp_totals[WARPS];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int inclusive = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int n = __shfl_up_sync(FULL_MASK, inclusive, o);
    if (lane >= o) inclusive += n;
  }
  if (lane == 31) warp_totals[warp] = inclusive;
  __syncthreads();
  int base = 0;
  for (int w = 0; w < warp; w++) base += warp_totals[w];
  __syncthreads();  // warp_totals is reused by the next call
  return base + inclusive - v;
}

// Routes token t (one warp): writes its top_k experts in increasing id and their weights. Lane
// s < top_k returns its pick's expert and `rank`, its place among the token's experts.
__device__ __forceinline__ int route_token(const void* logits, const void* bias, int* ids, float* weights, int t, int num_experts, int top_k,
                                           int num_groups, int topk_groups, int normalize, float scale, int& rank) {
  const int lane = threadIdx.x & 31;
  float score[PER_LANE], choice[PER_LANE];
  const long long row = (long long)t * num_experts;
#pragma unroll
  for (int i = 0; i < PER_LANE; i++) {
    const int e = i * 32 + lane;
    score[i] = e < num_experts ? logit_at(logits, row + e) : NEG_INF;
  }
#if SCORING == 0
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
#elif SCORING == 1
#pragma unroll
  for (int i = 0; i < PER_LANE; i++) score[i] = 1.f / (1.f + expf(-score[i]));
#endif
#pragma unroll
  for (int i = 0; i < PER_LANE; i++) {
    const int e = i * 32 + lane;
    choice[i] = e < num_experts ? score[i] + bias_at(bias, e) : NEG_INF;
  }

#if GROUP_SCORE
  // Group g's score lands in lane g; the topk_groups best groups are kept, the others' experts dropped.
  const int group_size = num_experts / num_groups;
  float group_score = NEG_INF;
  for (int g = 0; g < num_groups; g++) {
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
    if (lane == g) group_score = GROUP_SCORE == 1 ? b1 : b1 + b2;
  }
  unsigned int kept = 0;
  for (int r = 0; r < topk_groups; r++) {
    const bool candidate = lane < num_groups && !((kept >> lane) & 1u);
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
#endif

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
#if SCORING == 2
  const float m_top = warp_max(lane < top_k ? w : NEG_INF);
  w = lane < top_k ? expf(w - m_top) : 0.f;
  w = w / warp_sum(w);
#endif
  // DeepSeek-V3 adds 1e-20 to the sum; no other router's sum is small enough for it to matter.
  if (normalize) w = w / (warp_sum(w) + 1e-20f);
  w *= scale;
  rank = 0;
  for (int j = 0; j < top_k; j++) rank += __shfl_sync(FULL_MASK, my_id, j) < my_id;
  if (lane < top_k) {
    ids[(long long)t * top_k + rank] = my_id;
    weights[(long long)t * top_k + rank] = w;
  }
  return my_id;
}

// The grouping of a single token's pairs, by the warp that routed it: its experts are distinct and
// already in increasing order, so pair s is at place s in a tile of its own, and an expert's
// offset (and first tile) is the number of chosen experts below it.
__device__ __forceinline__ void group_single_token(int my_id, int rank, int* offsets, int* tile_start, int* tiles, int* sorted_pairs,
                                                   int* pair_pos, int num_experts, int top_k) {
  const int lane = threadIdx.x & 31;
  if (lane < top_k) {
    tiles[2 * rank] = my_id;
    tiles[2 * rank + 1] = rank;
    sorted_pairs[rank] = rank;
    pair_pos[rank] = rank;
  }
  for (int base = 0; base <= num_experts; base += 32) {
    const int e = base + lane;
    int below = 0;
    for (int j = 0; j < top_k; j++) below += __shfl_sync(FULL_MASK, my_id, j) < e;
    if (e <= num_experts) {
      offsets[e] = below;
      tile_start[e] = below;
    }
  }
}

// grid ceil(num_tokens / WARPS), block THREADS. ids, weights [num_tokens, top_k]; offsets,
// tile_start [num_experts + 1]; tiles [capacity, 2] (expert, first place); sorted_pairs, pair_pos
// [num_tokens * top_k] (a pair is t * top_k + slot). `done` is zero before the launch and after it.
extern "C" __global__ void __launch_bounds__(THREADS) moe_route_kernel(
    const void* __restrict__ logits, const void* __restrict__ bias, int* __restrict__ ids, float* __restrict__ weights,
    int* __restrict__ offsets, int* __restrict__ tile_start, int* __restrict__ tiles, int* __restrict__ sorted_pairs,
    int* __restrict__ pair_pos, unsigned int* __restrict__ done, int num_tokens, int num_experts, int top_k, int num_groups,
    int topk_groups, int normalize, float scale, int tile_rows) {
  const int t = blockIdx.x * WARPS + (threadIdx.x >> 5);
  int rank = 0;
  const int my_id = t < num_tokens ? route_token(logits, bias, ids, weights, t, num_experts, top_k, num_groups, topk_groups, normalize, scale, rank) : 0;
  // A decode step of one sequence skips the block-wide grouping (and the completion counter) below.
  if (num_tokens == 1) {
    if (t == 0) group_single_token(my_id, rank, offsets, tile_start, tiles, sorted_pairs, pair_pos, num_experts, top_k);
    return;
  }

  // The last block to get here groups every block's pairs.
  __shared__ bool last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(done, 1u) == gridDim.x - 1;
  __syncthreads();
  if (!last) return;

  __shared__ int cursor[MAX_EXPERTS];  // pairs per expert, then each expert's next free place
  const int tid = threadIdx.x, pairs = num_tokens * top_k;
  for (int e = tid; e < num_experts; e += THREADS) cursor[e] = 0;
  __syncthreads();
  for (int p = tid; p < pairs; p += THREADS) atomicAdd(&cursor[load_cg(ids + p)], 1);
  __syncthreads();
  int count[EXPERTS_PER_THREAD], tile_count[EXPERTS_PER_THREAD];
  int pair_sum = 0, tile_sum = 0;
#pragma unroll
  for (int j = 0; j < EXPERTS_PER_THREAD; j++) {
    const int e = tid * EXPERTS_PER_THREAD + j;
    count[j] = e < num_experts ? cursor[e] : 0;
    tile_count[j] = (count[j] + tile_rows - 1) / tile_rows;
    pair_sum += count[j];
    tile_sum += tile_count[j];
  }
  int place = block_exclusive_scan(pair_sum), tile = block_exclusive_scan(tile_sum);
#pragma unroll
  for (int j = 0; j < EXPERTS_PER_THREAD; j++) {
    const int e = tid * EXPERTS_PER_THREAD + j;
    if (e < num_experts) {
      offsets[e] = place;
      tile_start[e] = tile;
      for (int r = 0; r < tile_count[j]; r++) {
        tiles[2 * (tile + r)] = e;
        tiles[2 * (tile + r) + 1] = place + r * tile_rows;
      }
      cursor[e] = place;
    }
    place += count[j];
    tile += tile_count[j];
  }
  if (tid == THREADS - 1) {
    offsets[num_experts] = place;
    tile_start[num_experts] = tile;
  }
  __syncthreads();
  // Places within an expert's run depend on timing; every expert kernel treats rows independently,
  // so the results do not.
  for (int p = tid; p < pairs; p += THREADS) {
    const int at = atomicAdd(&cursor[load_cg(ids + p)], 1);
    sorted_pairs[at] = p;
    pair_pos[p] = at;
  }
  if (tid == 0) *done = 0u;
}
