// EAGLE-2 draft trees grown on the device (Backend.expandDraftTrees, writeDraftTreeMask,
// readDraftTreeCacheRows; CPU twins in src/backend/cpu/ops/draft-trees.ts). A tree table holds,
// for `num_trees` trees of `size` nodes, the nodes' target ids, then their parents (-1: the root),
// then their path log-probabilities (float32 bits), each [num_trees, size].
#include "common.cuh"

// The frontier's candidates of tree t, c = f * top_width + rank (frontier node f, the rank-th
// candidate of its row): its parent (-1: the root) and its path log-probability, the parent's plus
// its own rounded to float32 as the CPU's Math.fround does.
struct Candidates {
  const float* node_logprobs;
  const float* top_logprobs;
  int count, frontier, row, top_width;

  __device__ int parent(int c) const { return frontier == 0 ? -1 : count - frontier + c / top_width; }
  __device__ float path_logprob(int c) const {
    const int p = parent(c);
    return __fadd_rn(p < 0 ? 0.0f : node_logprobs[p], top_logprobs[(long long)(row + c / top_width) * top_width + c % top_width]);
  }
};

// One depth: block t expands tree t (depth [4, num_trees]: nodes before the depth, frontier size,
// children to keep, first candidate row in the latest sampling pass). A candidate's place is the
// number of candidates before it: a higher path log-probability, or an equal one earlier in
// (frontier node, rank) order, the order of the CPU's stable sort. The kept ones (place < keep) are
// written at count + place, ids mapped through `map` (null: none). Then every tree's nodes so far
// become the sampled ids (`sampled` [num_trees, size]), where the next pass's token sources read them.
extern "C" __global__ void expand_draft_trees_kernel(int* __restrict__ table, int num_trees, int size,
                                                     const int* __restrict__ depth,
                                                     const int* __restrict__ top_ids,
                                                     const float* __restrict__ top_logprobs, int top_width,
                                                     const int* __restrict__ map, int map_size,
                                                     int* __restrict__ sampled) {
  PDL_PROLOGUE();
  const int t = blockIdx.x;
  const long long base = (long long)t * size;
  int* tokens = table + base;
  int* parents = table + (long long)num_trees * size + base;
  float* logprobs = reinterpret_cast<float*>(table + 2LL * num_trees * size) + base;
  const int count = depth[t], keep = depth[2 * num_trees + t];
  if (keep > 0) {
    const Candidates cand{logprobs, top_logprobs, count, depth[num_trees + t], depth[3 * num_trees + t], top_width};
    const int n = max(cand.frontier, 1) * top_width;
    for (int c = threadIdx.x; c < n; c += blockDim.x) {
      const float mine = cand.path_logprob(c);
      int place = 0;
      for (int o = 0; o < n && place < keep; o++) {
        const float other = cand.path_logprob(o);
        if (other > mine || (other == mine && o < c)) place++;
      }
      if (place >= keep) continue;
      const long long at = (long long)(cand.row + c / top_width) * top_width + c % top_width;
      const int id = top_ids[at];
      tokens[count + place] = id < 0 || map == nullptr ? id : (id < map_size ? map[id] : -1);
      parents[count + place] = cand.parent(c);
      logprobs[count + place] = mine;
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < count + keep; i += blockDim.x) sampled[base + i] = tokens[i];
}

// The tree-mask rows of the step's draft-tree chunks: block s is chunk s, tree chunk_trees[s]'s
// root and first nodes; chunk token k >= 1 (node k - 1) gets its own, its ancestors' and the root's
// bits, `words` words a row. Each thread owns its rows.
extern "C" __global__ void draft_tree_mask_kernel(int* __restrict__ mask, int words,
                                                  const int* __restrict__ query_start_loc,
                                                  const int* __restrict__ chunk_trees,
                                                  const int* __restrict__ table, int num_trees, int size) {
  PDL_PROLOGUE();
  const int s = blockIdx.x;
  const int start = query_start_loc[s], len = query_start_loc[s + 1] - start;
  const int* parents = table + (long long)num_trees * size + (long long)chunk_trees[s] * size;
  for (int k = 1 + threadIdx.x; k < len; k += blockDim.x) {
    unsigned* row = reinterpret_cast<unsigned*>(mask) + (long long)(start + k) * words;
    for (int w = 0; w < words; w++) row[w] = 0u;
    for (int j = k;; j = parents[j - 1] + 1) {
      row[j >> 5] |= 1u << (j & 31);
      if (j == 0) break;
    }
  }
}

// The feature slot of each token of the step's draft-tree chunks: `slots` holds per chunk the
// slots of cache indices root - 1, root, root + 1, ... (chunk s's from query_start_loc[s] + s);
// the root reads the first, node i the one of index root + 1 + its parent.
extern "C" __global__ void draft_tree_slots_kernel(int* __restrict__ out, const int* __restrict__ slots,
                                                   const int* __restrict__ query_start_loc,
                                                   const int* __restrict__ chunk_trees,
                                                   const int* __restrict__ table, int num_trees, int size) {
  PDL_PROLOGUE();
  const int s = blockIdx.x;
  const int start = query_start_loc[s], len = query_start_loc[s + 1] - start;
  const int* parents = table + (long long)num_trees * size + (long long)chunk_trees[s] * size;
  for (int k = threadIdx.x; k < len; k += blockDim.x) out[start + k] = slots[start + s + (k == 0 ? 0 : parents[k - 1] + 2)];
}
