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
// byte at a time (up to four passes of a 256-bin histogram, one for each byte the candidates do not
// all share) and compacts the table, each thread over a contiguous run of the candidates (three
// block scans in all, where there were two per 256). The keys are read from global memory once,
// into shared memory, where they fit (about 55,000 candidates: 880k tokens in blocks of 16). At
// 128k context, batch 1, on an H100 the two kernels took 18 and 23 µs a layer beside 14 µs of
// sparse attention (Nsight Compute, 2026-12-06), before the scoring's loads were widened and kept
// in flight and the selection read its keys once, skipped shared bytes and added a warp's
// histogram entries at once where they share a bin.
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
// Candidate blocks one scoring CTA takes (SPARSE_SCORE_BLOCKS in sparse-select.ts): 8 per warp,
// loaded SCORE_INFLIGHT at a time; a lane holds 4 channels of each of D4_PER_LANE 128-channel spans.
constexpr int SCORE_BLOCKS = 64;
constexpr int D4_PER_LANE = (D + 127) / 128;
constexpr int SCORE_INFLIGHT = D4_PER_LANE > 2 ? 2 : 4;  // registers: 4 blocks' rows of up to 256 channels
constexpr bool Q_IN_REGS = D4_PER_LANE * GROUP <= 8;      // at most 32 floats of query a lane
static_assert(D % 4 == 0, "the scoring loads 4 channels of a summary row at once");
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
  __shared__ __align__(16) float s_q[GROUP * D];
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
  // A warp per candidate block, each lane over 4 channels of the block's min row and the same 4 of
  // its max row (8-byte loads, each row read coalesced); a warp loads SCORE_INFLIGHT blocks' rows
  // before it scores them, so enough bytes are in flight to stream the summaries at full bandwidth.
  const int warp = tid >> 5, lane = tid & 31;
  // The lane's query values (its 4 channels of each span, every head of the group), in registers
  // where they fit: read from shared memory per block, a lane's 4 consecutive floats would meet
  // those of every eighth lane in one bank (a 4-way conflict per read, which took the kernel from 18
  // to about 30 µs a layer at 128k context).
  float4 q_regs[Q_IN_REGS ? D4_PER_LANE * GROUP : 1];
  if constexpr (Q_IN_REGS) {
#pragma unroll
    for (int u = 0; u < D4_PER_LANE; u++) {
      const int c = 4 * (lane + 32 * u);
#pragma unroll
      for (int h = 0; h < GROUP; h++) q_regs[u * GROUP + h] = c < D ? *reinterpret_cast<const float4*>(s_q + h * D + c) : make_float4(0.f, 0.f, 0.f, 0.f);
    }
  }
  for (int b0 = first + warp * SCORE_INFLIGHT; b0 < end; b0 += WARPS * SCORE_INFLIGHT) {
    uint2 lo[SCORE_INFLIGHT][D4_PER_LANE], hi[SCORE_INFLIGHT][D4_PER_LANE];
#pragma unroll
    for (int j = 0; j < SCORE_INFLIGHT; j++) {
      const bf16* row = summaries + ((long long)table[min(b0 + j, end - 1)] * num_kv_heads + kvh) * 2 * D;
#pragma unroll
      for (int u = 0; u < D4_PER_LANE; u++) {
        const int c = 4 * (lane + 32 * u);
        lo[j][u] = c < D ? *reinterpret_cast<const uint2*>(row + c) : make_uint2(0, 0);
        hi[j][u] = c < D ? *reinterpret_cast<const uint2*>(row + D + c) : make_uint2(0, 0);
      }
    }
#pragma unroll
    for (int j = 0; j < SCORE_INFLIGHT; j++) {
      float s = 0.f;
#pragma unroll
      for (int u = 0; u < D4_PER_LANE; u++) {
        const int c = 4 * (lane + 32 * u);
        if (c >= D) continue;
        float mn[4], mx[4];
        unpack4(lo[j][u], mn);
        unpack4(hi[j][u], mx);
#pragma unroll
        for (int h = 0; h < GROUP; h++) {
          float4 q4;
          if constexpr (Q_IN_REGS) q4 = q_regs[u * GROUP + h];
          else q4 = *reinterpret_cast<const float4*>(s_q + h * D + c);  // 16 bytes a lane: no bank meets another lane's
          const float qv[4] = {q4.x, q4.y, q4.z, q4.w};
#pragma unroll
          for (int i = 0; i < 4; i++) s += fmaxf(qv[i] * mn[i], qv[i] * mx[i]);
        }
      }
      s = warp_sum(s);
      if (lane == 0 && b0 + j < end) keys[b0 + j] = ordered_key(s);
    }
  }
}

// grid (numKvHeads, numDecode), block NT, after sparse_score_kernel. out_tables [numDecode *
// numKvHeads, width] block ids, out_lens [numDecode * numKvHeads] keys, out_windows [numDecode *
// numKvHeads, 3] (window_key, window_index, the cache index of the token's chunk's first token);
// scores as sparse_score_kernel left them. staged: the dynamic shared memory holds max_blocks_per_seq
// + max_blocks_per_seq / 32 + 1 keys (sparse-select.ts `stagedKeyBytes`), and the candidates' keys
// are read from global memory once, into it; 0: every pass reads them from global memory (L2).
extern "C" __global__ void __launch_bounds__(NT) sparse_select_kernel(
    int* __restrict__ out_tables, int* __restrict__ out_lens, int* __restrict__ out_windows, const unsigned int* __restrict__ scores,
    const int* __restrict__ decode_seqs, const int* __restrict__ decode_tokens, const int* __restrict__ query_start,
    const int* __restrict__ positions, const int* __restrict__ seq_lens, const int* __restrict__ block_tables,
    int max_blocks_per_seq, int block_size, int num_kv_heads, int width, int budget, int sink_blocks, int window_blocks, int staged) {
  PDL_PROLOGUE();
  // Candidate i at i + i / 32: a thread's run of 32 consecutive candidates (the compaction's) then
  // falls in a bank of its own.
  extern __shared__ unsigned int s_keys[];
  __shared__ int s_warp[WARPS];
  __shared__ int s_hist[256];
  __shared__ int s_pick[2];
  __shared__ unsigned int s_bits[2];  // the AND and the OR of the candidates' keys
  const int kvh = blockIdx.x, di = blockIdx.y, tid = threadIdx.x, lane = tid & 31;
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
  const int candidates = end - first;
  const unsigned int* keys = scores + row * max_blocks_per_seq + first;
  auto key_at = [&](int i) { return staged ? s_keys[i + (i >> 5)] : keys[i]; };

  // One read of every key (into shared memory when staged), which also finds the bits they share.
  if (tid == 0) {
    s_bits[0] = 0xffffffffu;
    s_bits[1] = 0;
  }
  __syncthreads();
  unsigned int all_and = 0xffffffffu, any_or = 0;
#pragma unroll 8
  for (int i = tid; i < candidates; i += NT) {
    const unsigned int key = keys[i];
    if (staged) s_keys[i + (i >> 5)] = key;
    all_and &= key;
    any_or |= key;
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    all_and &= __shfl_xor_sync(FULL_MASK, all_and, o);
    any_or |= __shfl_xor_sync(FULL_MASK, any_or, o);
  }
  if (lane == 0) {
    atomicAnd(&s_bits[0], all_and);
    atomicOr(&s_bits[1], any_or);
  }
  __syncthreads();
  const unsigned int shared_bits = s_bits[0], differ = s_bits[0] ^ s_bits[1];

  // The keep-th largest key, a byte at a time from the top: each pass counts, by their next byte,
  // the keys that carry the bytes found so far, and takes the byte where the keep-th largest falls
  // (thread t holds byte 255 - t's count, so its exclusive scan is the count of larger bytes). A
  // byte every candidate shares is the keep-th's too, with nothing larger: its pass is skipped.
  unsigned int threshold = 0xffffffffu, mask = 0;
  int need = keep;  // of the keys carrying `threshold & mask`, the rank sought among them
  if (keep > 0) {
    threshold = 0;
    for (int shift = 24; shift >= 0; shift -= 8) {
      if (((differ >> shift) & 255u) == 0) {
        threshold |= shared_bits & (255u << shift);
        mask |= 255u << shift;
        continue;
      }
      s_hist[tid] = 0;
      __syncthreads();
      for (int base = 0; base < candidates; base += NT) {
        const int i = base + tid;
        const unsigned int key = i < candidates ? key_at(i) : 0u;
        const bool counts = i < candidates && (key & mask) == threshold;
        const unsigned int bin = (key >> shift) & 255u;
        // A warp whose counted keys all share one bin adds once (a pass's keys crowd into a few
        // bins, the first's often into one); otherwise each lane adds its own.
        const unsigned int counted = __ballot_sync(FULL_MASK, counts);
        const unsigned int lead_bin = __shfl_sync(FULL_MASK, bin, counted == 0 ? 0 : __ffs(counted) - 1);
        if (__all_sync(FULL_MASK, !counts || bin == lead_bin)) {
          if (counted != 0 && lane == __ffs(counted) - 1) atomicAdd(&s_hist[bin], __popc(counted));
        } else if (counts) {
          atomicAdd(&s_hist[bin], 1);
        }
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
  const int per = (candidates + NT - 1) / NT;
  const int lo = min(candidates, tid * per), hi = min(candidates, (tid + 1) * per);
  int my_above = 0, my_ties = 0;
  for (int i = lo; i < hi; i++) {
    const unsigned int key = key_at(i);
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
  for (int i = lo, tie = ties_before; i < hi; i++) {
    const unsigned int key = key_at(i);
    const bool take = key > threshold || (key == threshold && tie++ < ties);
    if (take) out[at++] = table[first + i];
  }
  for (int i = tid; i < cache_blocks - end; i += NT) out[sink_blocks + keep + i] = table[end + i];
  if (tid == 0) {
    out_lens[row] = (sink_blocks + keep) * block_size + (cache_index + 1 - end * block_size);
    out_windows[row * 3] = (sink_blocks + keep) * block_size;
    out_windows[row * 3 + 1] = end * block_size;
    out_windows[row * 3 + 2] = chunk_start;
  }
}
