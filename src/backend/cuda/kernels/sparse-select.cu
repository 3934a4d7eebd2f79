// Quest's block selection for sparse decode attention (step/kv-cache-layout.ts `SparseAttention`;
// backend/cpu/ops/key-summaries.ts `selectKvBlocks` is the CPU twin). For each decode and kv head,
// a compacted block table of `budget` entries: the sink blocks, the candidate blocks of
// highest score Σ_h Σ_c max(q_hc · min_c, q_hc · max_c) over the GROUP query heads of the kv head
// (ties to the earlier block), and the recent window's blocks, all in sequence order, and the
// number of keys they hold (every block full but the last, the query's own). A decode is a query
// token (decode_tokens, of sequence decode_seqs): a verification chunk's tokens are decodes each,
// selecting as plain decodes at their positions. Blocks are counted by the token's position; the
// recent window's run up to the block of its cache index, which is its position but in a draft
// tree, whose tokens sit further on: there the window's keys are cache indices window_index ..
// the token's own (from compacted key window_key on), which decode attention (TREE=1) masks by the
// token's tree row, and a row holds up to `width` blocks (budget plus the tree's). The candidates
// lie before the chunk (the engine checks that the window reaches past a tree). A query of no more
// than `budget` blocks keeps its table up to its cache index, window_key and window_index 0. decode_attention_kernel (SPARSE=1) then
// reads these tables. The grid and the buffers depend only on the step's shape, so the launch
// records into a CUDA graph.
#include "common.cuh"

// nvcc-check: -DHEAD_DIM=64 -DGROUP=3
// nvcc-check: -DHEAD_DIM=128 -DGROUP=4
// nvcc-check: -DHEAD_DIM=128 -DGROUP=8
// nvcc-check: -DHEAD_DIM=72 -DGROUP=1

#if !defined(HEAD_DIM) || !defined(GROUP)
#error "compile with -DHEAD_DIM=<head dim> -DGROUP=<query heads per kv head>"
#endif

namespace {
constexpr int D = HEAD_DIM;
constexpr int NT = 256;
constexpr int WARPS = NT / 32;

// Scores as unsigned keys in the same order (larger score, larger key).
__device__ __forceinline__ unsigned int ordered_key(float s) {
  const unsigned int u = __float_as_uint(s);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Exclusive prefix sum of v over the block, in thread order; *total gets the block's sum.
// s_warp holds WARPS ints; the call ends on a barrier, so it can be called again at once.
__device__ __forceinline__ int block_exclusive_scan(int v, int* s_warp, int* total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int inclusive = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int n = __shfl_up_sync(FULL_MASK, inclusive, o);
    if (lane >= o) inclusive += n;
  }
  if (lane == 31) s_warp[warp] = inclusive;
  __syncthreads();
  int before = 0, sum = 0;
#pragma unroll
  for (int w = 0; w < WARPS; w++) {
    if (w < warp) before += s_warp[w];
    sum += s_warp[w];
  }
  __syncthreads();
  *total = sum;
  return before + inclusive - v;
}
}  // namespace

// grid (numKvHeads, numDecode), block NT. out_tables [numDecode * numKvHeads, width] block ids,
// out_lens [numDecode * numKvHeads] keys, out_windows [numDecode * numKvHeads, 3] (window_key,
// window_index, the cache index of the token's chunk's first token); scores [numDecode *
// numKvHeads, max_blocks_per_seq] scratch. summaries [numBlocks, numKvHeads, 2, D] bf16
// (key-summaries.cu).
extern "C" __global__ void __launch_bounds__(NT) sparse_select_kernel(
    int* __restrict__ out_tables, int* __restrict__ out_lens, int* __restrict__ out_windows, unsigned int* __restrict__ scores,
    const bf16* __restrict__ qkv, const bf16* __restrict__ summaries, const int* __restrict__ decode_seqs,
    const int* __restrict__ decode_tokens, const int* __restrict__ query_start, const int* __restrict__ positions,
    const int* __restrict__ seq_lens, const int* __restrict__ block_tables, int max_blocks_per_seq, int block_size,
    int num_kv_heads, int width, int budget, int sink_blocks, int window_blocks) {
  PDL_PROLOGUE();
  __shared__ float s_q[GROUP * D];
  __shared__ int s_warp[WARPS];
  const int kvh = blockIdx.x, di = blockIdx.y, tid = threadIdx.x;
  const int seq = decode_seqs[di];
  const int token = decode_tokens[di];
  const int chunk_start = seq_lens[seq] - (query_start[seq + 1] - query_start[seq]);
  const int cache_index = chunk_start + token - query_start[seq];
  const int num_blocks = (positions[token] + block_size) / block_size;  // of its position + 1 keys
  const int cache_blocks = cache_index / block_size + 1;
  const int* table = block_tables + (long long)seq * max_blocks_per_seq;
  const long long row = (long long)di * num_kv_heads + kvh;
  int* out = out_tables + row * width;
  if (num_blocks <= budget) {
    for (int i = tid; i < cache_blocks; i += NT) out[i] = table[i];
    if (tid == 0) {
      out_lens[row] = cache_index + 1;
      out_windows[row * 3] = 0;
      out_windows[row * 3 + 1] = 0;
      out_windows[row * 3 + 2] = chunk_start;
    }
    return;
  }

  const int num_heads = num_kv_heads * GROUP;
  const bf16* q = qkv + (long long)token * (num_heads + 2 * num_kv_heads) * D + (long long)kvh * GROUP * D;
  for (int i = tid; i < GROUP * D; i += NT) s_q[i] = bf16_to_f32(q[i]);
  __syncthreads();

  const int first = sink_blocks, end = num_blocks - window_blocks, keep = budget - sink_blocks - window_blocks;
  unsigned int* keys = scores + row * max_blocks_per_seq;
  // A warp per candidate block, lanes over channels: each summary row is read coalesced.
  const int warp = tid >> 5, lane = tid & 31;
  for (int b = first + warp; b < end; b += WARPS) {
    const bf16* lo = summaries + ((long long)table[b] * num_kv_heads + kvh) * 2 * D;
    const bf16* hi = lo + D;
    float s = 0.f;
    for (int c = lane; c < D; c += 32) {
      const float mn = bf16_to_f32(lo[c]), mx = bf16_to_f32(hi[c]);
#pragma unroll
      for (int h = 0; h < GROUP; h++) {
        const float qv = s_q[h * D + c];
        s += fmaxf(qv * mn, qv * mx);
      }
    }
    s = warp_sum(s);
    if (lane == 0) keys[b] = ordered_key(s);
  }
  __syncthreads();

  // The keep-th largest key, bit by bit from the top: the largest T with at least `keep` keys >= T.
  unsigned int threshold = 0;
  int total = 0;
  for (int bit = 31; bit >= 0; bit--) {
    const unsigned int candidate = threshold | (1u << bit);
    int count = 0;
    for (int b = first + tid; b < end; b += NT) count += keys[b] >= candidate;
    block_exclusive_scan(count, s_warp, &total);
    if (total >= keep) threshold = candidate;
  }
  int above = 0;
  for (int b = first + tid; b < end; b += NT) above += keys[b] > threshold;
  block_exclusive_scan(above, s_warp, &total);
  const int ties = keep - total;  // keys equal to the threshold taken, the earliest first

  for (int i = tid; i < sink_blocks; i += NT) out[i] = table[i];
  int written = sink_blocks, ties_seen = 0;
  for (int base = first; base < end; base += NT) {
    const int b = base + tid;
    const unsigned int key = b < end ? keys[b] : 0u;
    const bool tie = b < end && key == threshold;
    int tie_total = 0, taken = 0;
    const int tie_rank = ties_seen + block_exclusive_scan(tie ? 1 : 0, s_warp, &tie_total);
    const bool take = b < end && (key > threshold || (tie && tie_rank < ties));
    const int at = written + block_exclusive_scan(take ? 1 : 0, s_warp, &taken);
    if (take) out[at] = table[b];
    written += taken;
    ties_seen += tie_total;
  }
  for (int i = tid; i < cache_blocks - end; i += NT) out[sink_blocks + keep + i] = table[end + i];
  if (tid == 0) {
    out_lens[row] = (sink_blocks + keep) * block_size + (cache_index + 1 - end * block_size);
    out_windows[row * 3] = (sink_blocks + keep) * block_size;
    out_windows[row * 3 + 1] = end * block_size;
    out_windows[row * 3 + 2] = chunk_start;
  }
}
