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
// reads these tables. The grids and the buffers depend only on the step's shape, so the launches
// record into a CUDA graph.
//
// Two kernels: sparse_score_kernel scores the candidates, SCORE_BLOCKS of them per CTA, so a
// batch-1 decode's thousands of candidates spread over the GPU (one CTA per kv head scored them
// one after another per warp, latency-bound: about 4.8 ms a step at 32k context on an H100 by
// subtraction, more than the dense attention it replaced); sparse_select_kernel then finds the keep-th largest score a
// byte at a time (four passes of a 256-bin histogram) and compacts the table, each thread over a
// contiguous run of the candidates (three block scans in all, where there were two per 256). At
// 128k context, batch 1, on an H100 they take 18 and 23 µs a layer beside 14 µs of sparse attention
// (Nsight Compute, 2026-12-06). A rewrite (8-byte summary loads with four blocks in flight, the
// query in registers; keys staged once in shared memory, bytes every candidate shares skipped, a
// warp's histogram entries added at once) made the 128k step 7.92 ms against these kernels' 7.82:
// not kept.
#include "common.cuh"

// nvcc-check: -DHEAD_DIM=64 -DGROUP=3
// nvcc-check: -DHEAD_DIM=128 -DGROUP=4
// nvcc-check: -DHEAD_DIM=128 -DGROUP=8
// nvcc-check: -DHEAD_DIM=72 -DGROUP=1
// nvcc-check: -DHEAD_DIM=512 -DGROUP=8

#if !defined(HEAD_DIM) || !defined(GROUP)
#error "compile with -DHEAD_DIM=<head dim> -DGROUP=<query heads per kv head>"
#endif

namespace {
constexpr int D = HEAD_DIM;
constexpr int NT = 256;
constexpr int WARPS = NT / 32;
// Candidate blocks one scoring CTA takes (SPARSE_SCORE_BLOCKS in sparse-select.ts): 8 per warp.
constexpr int SCORE_BLOCKS = 64;
static_assert(NT == 256, "the selection's histogram gives each thread one of 256 bins");
// sparse_score_kernel keeps a kv head's query heads in static shared memory (48 KB at most): with
// head dim 512, groups of up to 24 query heads.
static_assert(GROUP * D * 4 <= 48 * 1024, "GROUP * HEAD_DIM query values must fit 48 KB of static shared memory");

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

// grid (numKvHeads, numDecode, ceil(max_blocks_per_seq / SCORE_BLOCKS)), block NT. Writes the
// ordered keys of candidate blocks [z * SCORE_BLOCKS, (z + 1) * SCORE_BLOCKS) of each decode and kv
// head that has more blocks than the budget into scores [numDecode * numKvHeads, max_blocks_per_seq].
// summaries [numBlocks, numKvHeads, 2, D] bf16 (key-summaries.cu).
extern "C" __global__ void __launch_bounds__(NT) sparse_score_kernel(
    unsigned int* __restrict__ scores, const bf16* __restrict__ qkv, const bf16* __restrict__ summaries,
    const int* __restrict__ decode_seqs, const int* __restrict__ decode_tokens, const int* __restrict__ positions,
    const int* __restrict__ block_tables, int max_blocks_per_seq, int block_size, int num_kv_heads, int budget,
    int sink_blocks, int window_blocks) {
  PDL_PROLOGUE();
  __shared__ float s_q[GROUP * D];
  const int kvh = blockIdx.x, di = blockIdx.y, tid = threadIdx.x;
  const int seq = decode_seqs[di];
  const int token = decode_tokens[di];
  const int num_blocks = (positions[token] + block_size) / block_size;  // of its position + 1 keys
  const int first = max(sink_blocks, (int)blockIdx.z * SCORE_BLOCKS);
  const int end = min(num_blocks - window_blocks, ((int)blockIdx.z + 1) * SCORE_BLOCKS);
  if (num_blocks <= budget || first >= end) return;  // the same for the whole CTA

  const int num_heads = num_kv_heads * GROUP;
  const bf16* q = qkv + (long long)token * (num_heads + 2 * num_kv_heads) * D + (long long)kvh * GROUP * D;
  for (int i = tid; i < GROUP * D; i += NT) s_q[i] = bf16_to_f32(q[i]);
  __syncthreads();

  const int* table = block_tables + (long long)seq * max_blocks_per_seq;
  unsigned int* keys = scores + ((long long)di * num_kv_heads + kvh) * max_blocks_per_seq;
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
}

// grid (numKvHeads, numDecode), block NT, after sparse_score_kernel. out_tables [numDecode *
// numKvHeads, width] block ids, out_lens [numDecode * numKvHeads] keys, out_windows [numDecode *
// numKvHeads, 3] (window_key, window_index, the cache index of the token's chunk's first token);
// scores as sparse_score_kernel left them.
extern "C" __global__ void __launch_bounds__(NT) sparse_select_kernel(
    int* __restrict__ out_tables, int* __restrict__ out_lens, int* __restrict__ out_windows, const unsigned int* __restrict__ scores,
    const int* __restrict__ decode_seqs, const int* __restrict__ decode_tokens, const int* __restrict__ query_start,
    const int* __restrict__ positions, const int* __restrict__ seq_lens, const int* __restrict__ block_tables,
    int max_blocks_per_seq, int block_size, int num_kv_heads, int width, int budget, int sink_blocks, int window_blocks) {
  PDL_PROLOGUE();
  __shared__ int s_warp[WARPS];
  __shared__ int s_hist[256];
  __shared__ int s_pick[2];
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

  const int first = sink_blocks, end = num_blocks - window_blocks, keep = budget - sink_blocks - window_blocks;
  const unsigned int* keys = scores + row * max_blocks_per_seq;

  // The keep-th largest key, a byte at a time from the top: each pass counts, by their next byte,
  // the keys that carry the bytes found so far, and takes the byte where the keep-th largest falls
  // (thread t holds byte 255 - t's count, so its exclusive scan is the count of larger bytes).
  unsigned int threshold = 0xffffffffu, mask = 0;
  int need = keep;  // of the keys carrying `threshold & mask`, the rank sought among them
  if (keep > 0) {
    threshold = 0;
    for (int shift = 24; shift >= 0; shift -= 8) {
      s_hist[tid] = 0;
      __syncthreads();
      for (int b = first + tid; b < end; b += NT) {
        const unsigned int key = keys[b];
        if ((key & mask) == threshold) atomicAdd(&s_hist[(key >> shift) & 255u], 1);
      }
      __syncthreads();
      const int count = s_hist[255 - tid];
      int total = 0;
      const int larger = block_exclusive_scan(count, s_warp, &total);
      if (larger < need && need <= larger + count) {
        s_pick[0] = 255 - tid;
        s_pick[1] = larger;
      }
      __syncthreads();
      threshold |= (unsigned int)s_pick[0] << shift;
      mask |= 255u << shift;
      need -= s_pick[1];
      __syncthreads();  // s_pick and s_hist are rewritten by the next pass
    }
  }
  // Each thread takes a contiguous run of the candidates, so a scan orders its takes and its ties
  // alike: the keys above the threshold, and of those equal to it the earliest `keep - above`.
  const int candidates = end - first, per = (candidates + NT - 1) / NT;
  const int lo = first + min(candidates, tid * per), hi = first + min(candidates, (tid + 1) * per);
  int my_above = 0, my_ties = 0;
  for (int b = lo; b < hi; b++) {
    const unsigned int key = keys[b];
    my_above += key > threshold;
    my_ties += key == threshold;
  }
  int above = 0, all_ties = 0, taken = 0;
  block_exclusive_scan(my_above, s_warp, &above);
  const int ties = keep - above;  // keys equal to the threshold taken, the earliest first
  const int ties_before = block_exclusive_scan(my_ties, s_warp, &all_ties);
  const int my_takes = my_above + max(0, min(my_ties, ties - ties_before));
  int at = sink_blocks + block_exclusive_scan(my_takes, s_warp, &taken);
  for (int i = tid; i < sink_blocks; i += NT) out[i] = table[i];
  for (int b = lo, tie = ties_before; b < hi; b++) {
    const unsigned int key = keys[b];
    const bool take = key > threshold || (key == threshold && tie++ < ties);
    if (take) out[at++] = table[b];
  }
  for (int i = tid; i < cache_blocks - end; i += NT) out[sink_blocks + keep + i] = table[end + i];
  if (tid == 0) {
    out_lens[row] = (sink_blocks + keep) * block_size + (cache_index + 1 - end * block_size);
    out_windows[row * 3] = (sink_blocks + keep) * block_size;
    out_windows[row * 3 + 1] = end * block_size;
    out_windows[row * 3 + 2] = chunk_start;
  }
}
