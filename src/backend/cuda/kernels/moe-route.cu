// Mixture-of-experts routing, one launch per MoE layer and step. Each warp routes one token
// (route_token, moe-route.cuh). Then the last block to finish groups the step's (token, slot)
// pairs by expert for the expert kernels: offsets of each expert's run in an expert-sorted order,
// each pair's place in it, and a table of tiles (expert, first place) of at most `tile_rows` pairs
// that the expert kernels' blocks look up. No host synchronization and a fixed grid: the grouping
// block also resets the completion counter, so the launch replays in a CUDA graph.
//
// Specialized by PER_LANE only (moe-route.cuh); the routing rule's kinds are run-time arguments.
#include "common.cuh"
#include "moe-route.cuh"

// nvcc-check: -DPER_LANE=1
// nvcc-check: -DPER_LANE=4
// nvcc-check: -DPER_LANE=32

#define WARPS 8
#define THREADS (WARPS * 32)
#define MAX_EXPERTS 1024
#define EXPERTS_PER_THREAD (MAX_EXPERTS / THREADS)

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
    int* __restrict__ pair_pos, unsigned int* __restrict__ done, int num_tokens, int num_experts, int top_k, int logits_f32, int scoring,
    int bias_kind, int group_score, int num_groups, int topk_groups, int normalize, float scale, float softcap, int tile_rows) {
  PDL_PROLOGUE();
  const RouteRule rule = {scoring, bias_kind, group_score, logits_f32, num_groups, topk_groups, normalize, scale, softcap};
  const int t = blockIdx.x * WARPS + (threadIdx.x >> 5);
  int rank = 0;
  const int my_id = t < num_tokens ? route_token(logits, bias, ids, weights, t, num_experts, top_k, rule, rank) : 0;
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
