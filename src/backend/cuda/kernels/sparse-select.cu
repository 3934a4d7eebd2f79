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
// contiguous run of the candidates (three block scans in all, where there were two per 256), on
// Hopper with a cluster of CTAs per decode and kv head (SELECT_CLUSTER, below). At
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
// nvcc-check-sm90a: -DHEAD_DIM=128 -DGROUP=4 -DSELECT_CLUSTER=8

#ifndef SELECT_CLUSTER
#define SELECT_CLUSTER 1
#endif
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

// sparse_select_kernel with SELECT_CLUSTER > 1 (Hopper): a thread block cluster of that many CTAs
// per decode and kv head, each taking a contiguous share of the candidates; the radix passes add
// the CTAs' histograms through distributed shared memory and the compaction places each CTA's takes
// after its lower ranks'. At batch 1 one CTA a kv head held the selection on 8 SMs for 23 µs.
// Clusters need sm_90: nvcc and NVRTC refuse __cluster_dims__ below it, and the launcher asks for
// SELECT_CLUSTER > 1 on Hopper only.
#if SELECT_CLUSTER > 1
#define SELECT_CLUSTER_DIMS __cluster_dims__(SELECT_CLUSTER, 1, 1)
__device__ __forceinline__ int cluster_rank() {
  unsigned int r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
  return (int)r;
}
// Every thread of every CTA of the cluster: the shared memory written before is visible after.
__device__ __forceinline__ void cluster_sync() {
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}
// The int at `local`'s offset in the shared memory of cluster CTA `rank`.
__device__ __forceinline__ int cluster_load(const int* local, int rank) {
  unsigned int remote;
  int v;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(remote) : "r"((unsigned int)__cvta_generic_to_shared(local)), "r"(rank));
  asm volatile("ld.shared::cluster.u32 %0, [%1];\n" : "=r"(v) : "r"(remote) : "memory");
  return v;
}
#else
#define SELECT_CLUSTER_DIMS
__device__ __forceinline__ int cluster_rank() { return 0; }
__device__ __forceinline__ void cluster_sync() { __syncthreads(); }
__device__ __forceinline__ int cluster_load(const int* local, int) { return *local; }
#endif

// grid (numKvHeads * SELECT_CLUSTER, numDecode), block NT, after sparse_score_kernel. out_tables
// [numDecode * numKvHeads, width] block ids, out_lens [numDecode * numKvHeads] keys, out_windows
// [numDecode * numKvHeads, 3] (window_key, window_index, the cache index of the token's chunk's
// first token); scores as sparse_score_kernel left them.
extern "C" __global__ void SELECT_CLUSTER_DIMS __launch_bounds__(NT) sparse_select_kernel(
    int* __restrict__ out_tables, int* __restrict__ out_lens, int* __restrict__ out_windows, const unsigned int* __restrict__ scores,
    const int* __restrict__ decode_seqs, const int* __restrict__ decode_tokens, const int* __restrict__ query_start,
    const int* __restrict__ positions, const int* __restrict__ seq_lens, const int* __restrict__ block_tables,
    int max_blocks_per_seq, int block_size, int num_kv_heads, int width, int budget, int sink_blocks, int window_blocks) {
  PDL_PROLOGUE();
  __shared__ int s_warp[WARPS];
  __shared__ int s_hist[2][256];  // a pass's counts, by parity: the cluster reads one while the next fills
  __shared__ int s_pick[2];
  __shared__ int s_totals[2];     // this CTA's keys above the threshold and equal to it
  const int rank = cluster_rank();
  const int kvh = blockIdx.x / SELECT_CLUSTER, di = blockIdx.y, tid = threadIdx.x;
  const int seq = decode_seqs[di];
  const int token = decode_tokens[di];
  const int chunk_start = seq_lens[seq] - (query_start[seq + 1] - query_start[seq]);
  const int cache_index = chunk_start + token - query_start[seq];
  const int num_blocks = (positions[token] + block_size) / block_size;  // of its position + 1 keys
  const int cache_blocks = cache_index / block_size + 1;
  const int* table = block_tables + (long long)seq * max_blocks_per_seq;
  const long long row = (long long)di * num_kv_heads + kvh;
  int* out = out_tables + row * width;
  if (num_blocks <= budget) {  // the same for the whole cluster
    if (rank != 0) return;
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
  // This CTA's share of the candidates.
  const int candidates = end - first, share = (candidates + SELECT_CLUSTER - 1) / SELECT_CLUSTER;
  const int my_first = first + min(candidates, rank * share), my_end = first + min(candidates, (rank + 1) * share);

  // The keep-th largest key, a byte at a time from the top: each pass counts, by their next byte,
  // the keys that carry the bytes found so far, and takes the byte where the keep-th largest falls
  // (thread t holds byte 255 - t's count over the cluster, so its exclusive scan is the count of
  // larger bytes). A warp's keys of one byte are added at once: most share their top bytes.
  unsigned int threshold = 0xffffffffu, mask = 0;
  int need = keep;  // of the keys carrying `threshold & mask`, the rank sought among them
  if (keep > 0) {
    threshold = 0;
    for (int shift = 24, parity = 0; shift >= 0; shift -= 8, parity ^= 1) {
      int* hist = s_hist[parity];
      hist[tid] = 0;
      __syncthreads();
      for (int b = my_first + tid; b < my_end; b += NT) {
        const unsigned int key = keys[b];
        const bool counted = (key & mask) == threshold;
        const unsigned int bin = counted ? (key >> shift) & 255u : 256u;
        const unsigned int peers = __match_any_sync(__activemask(), bin);
        if (counted && (tid & 31) == __ffs(peers) - 1) atomicAdd(&hist[bin], __popc(peers));
      }
      cluster_sync();  // every CTA's counts are in
      int count = 0;
      for (int q = 0; q < SELECT_CLUSTER; q++) count += cluster_load(&hist[255 - tid], q);
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
      __syncthreads();  // s_pick is rewritten by the next pass (this parity's counts, two passes on, after a cluster barrier)
    }
  }
  // Each thread takes a contiguous run of the CTA's share, so a scan orders its takes and its ties
  // alike: the keys above the threshold, and of those equal to it the earliest `keep - above`
  // over the cluster, lower ranks' first.
  const int mine = my_end - my_first, per = (mine + NT - 1) / NT;
  const int lo = my_first + min(mine, tid * per), hi = my_first + min(mine, (tid + 1) * per);
  int my_above = 0, my_ties = 0;
  for (int b = lo; b < hi; b++) {
    const unsigned int key = keys[b];
    my_above += key > threshold;
    my_ties += key == threshold;
  }
  int cta_above = 0, cta_ties = 0, taken = 0;
  block_exclusive_scan(my_above, s_warp, &cta_above);
  const int ties_before_in_cta = block_exclusive_scan(my_ties, s_warp, &cta_ties);
  if (tid == 0) {
    s_totals[0] = cta_above;
    s_totals[1] = cta_ties;
  }
  cluster_sync();  // every CTA's totals are in
  int above = 0, ties_before_cta = 0, takes_before_cta = 0;
  for (int q = 0; q < SELECT_CLUSTER; q++) above += cluster_load(&s_totals[0], q);
  const int ties = keep - above;  // keys equal to the threshold taken, the earliest first
  for (int q = 0; q < rank; q++) {
    const int q_above = cluster_load(&s_totals[0], q), q_ties = cluster_load(&s_totals[1], q);
    takes_before_cta += q_above + max(0, min(q_ties, ties - ties_before_cta));
    ties_before_cta += q_ties;
  }
  cluster_sync();  // no CTA leaves while another may still read its totals
  const int ties_before = ties_before_cta + ties_before_in_cta;
  const int my_takes = my_above + max(0, min(my_ties, ties - ties_before));
  int at = sink_blocks + takes_before_cta + block_exclusive_scan(my_takes, s_warp, &taken);
  for (int b = lo, tie = ties_before; b < hi; b++) {
    const unsigned int key = keys[b];
    const bool take = key > threshold || (key == threshold && tie++ < ties);
    if (take) out[at++] = table[b];
  }
  if (rank != 0) return;
  for (int i = tid; i < sink_blocks; i += NT) out[i] = table[i];
  for (int i = tid; i < cache_blocks - end; i += NT) out[sink_blocks + keep + i] = table[end + i];
  if (tid == 0) {
    out_lens[row] = (sink_blocks + keep) * block_size + (cache_index + 1 - end * block_size);
    out_windows[row * 3] = (sink_blocks + keep) * block_size;
    out_windows[row * 3 + 1] = end * block_size;
    out_windows[row * 3 + 2] = chunk_start;
  }
}
