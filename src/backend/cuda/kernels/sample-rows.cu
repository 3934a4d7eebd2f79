// The sampling pass on the GPU, one block per draw: masks, logit biases and penalties, greedy argmax or
// temperature, min-p, top-k, top-p and a Gumbel-max draw, the drawn token's raw logprob and the
// top raw alternatives'. Only token ids and requested logprobs cross to the host, never a row of
// logits. Its CPU twin, step for step, is src/sampling/draw-sampler.ts.
#include "common.cuh"

#define THREADS 1024
#define NO_INDEX 0x7fffffff
#define MAX_TOP 32
#define MAX_CANDIDATES 2048
#define DRAFT_HISTORY_COLUMNS 64  // draw.ts's DRAFT_HISTORY_COLUMNS: ids per row of the draft history
#define MAX_EXTRA (1 + DRAFT_HISTORY_COLUMNS)  // a pending token and a full history row
#define MASKED -1  // draw.ts's MASKED: an entry's count for a token that cannot be drawn
#define UNSEEN -2  // draw.ts's UNSEEN: an entry's count for a token listed only for its logit bias

// One draw as packDraws (sample-rows.ts) lays it out: 18 words.
struct Draw {
  int row;
  unsigned int seed;
  int top_k;             // 0: none
  int pending;           // index in prev_ids of an output token the host has not read, or -1
  float inv_temperature; // 0: greedy
  float top_p;           // 1: none
  float log_min_p;       // -inf: none
  float repetition;
  float presence;
  float frequency;
  int entries_begin;     // [begin, end) of the entries: (token, output count), or count MASKED / UNSEEN
  int entries_end;
  int num_top;           // raw logprobs of this many most likely tokens
  int scored;            // >= 0: report this token (a known prompt token) instead of a draw
  int allowed_begin;     // word offset from the entries of the allowed-token bitmask, or -1: all allowed
  int history_row;       // row of the draft history: the drafts before this draw, and where its token goes; -1: none
  int history_length;    // drafts before it in that row
  int bias_begin;        // word offset from the entries of the entries' float logit biases (one per entry), or -1: none
};

// The noise of src/sampling/gumbel.ts, bit for bit up to logf's rounding.
__device__ __forceinline__ unsigned int mix32(unsigned int h) {
  h = (h ^ (h >> 16)) * 0x85ebca6bu;
  h = (h ^ (h >> 13)) * 0xc2b2ae35u;
  return h ^ (h >> 16);
}

__device__ __forceinline__ float gumbel_noise(unsigned int seed, unsigned int index) {
  const unsigned int h = mix32(mix32(seed ^ (index * 0x9e3779b9u)) ^ 0x5bd1e995u);
  const float u = ((float)(h >> 8) + 0.5f) * 5.9604644775390625e-8f;  // 2^-24
  return -logf(-logf(u));
}

// Unsigned keys in the order of the (non-NaN) floats, so thresholds are found by bisecting keys.
__device__ __forceinline__ unsigned int order_key(float f) {
  const unsigned int b = __float_as_uint(f);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
#define KEY_NEG_INF 0x007fffffu  // order_key(-inf)
#define KEY_FINITE 0x00800000u   // order_key(-FLT_MAX): the smallest key of a finite value

// (value, index) pairs ordered as the host scans: larger value first, lower index on ties.
__device__ __forceinline__ bool beats(float v, int i, float best, int best_i) { return v > best || (v == best && i < best_i); }

// Folds (max m, sum s of exp(x - m)) pairs: the running log-sum-exp of a softmax.
__device__ __forceinline__ void merge_lse(float& m, float& s, float m2, float s2) {
  const float top = fmaxf(m, m2);
  if (top == NEG_INF) return;
  s = s * __expf(m - top) + s2 * __expf(m2 - top);
  m = top;
}

// Block-wide reductions for THREADS threads; every thread gets the result. Each combines in a
// fixed order (a xor butterfly gives every lane the same bits), so a draw is reproducible.
__device__ __forceinline__ void block_argmax(float& best, int& best_i) {
  __shared__ float values[32];
  __shared__ int indices[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int round = 0; round < 2; round++) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float v = __shfl_xor_sync(FULL_MASK, best, o);
      const int i = __shfl_xor_sync(FULL_MASK, best_i, o);
      if (beats(v, i, best, best_i)) {
        best = v;
        best_i = i;
      }
    }
    if (round == 1) break;
    __syncthreads();  // the shared arrays may still be read by a previous call
    if (lane == 0) {
      values[warp] = best;
      indices[warp] = best_i;
    }
    __syncthreads();
    best = values[lane];
    best_i = indices[lane];
  }
}

__device__ __forceinline__ void block_lse(float& m, float& s) {
  __shared__ float ms[32], ss[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) merge_lse(m, s, __shfl_xor_sync(FULL_MASK, m, o), __shfl_xor_sync(FULL_MASK, s, o));
  __syncthreads();
  if (lane == 0) {
    ms[warp] = m;
    ss[warp] = s;
  }
  __syncthreads();
  m = ms[lane];
  s = ss[lane];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) merge_lse(m, s, __shfl_xor_sync(FULL_MASK, m, o), __shfl_xor_sync(FULL_MASK, s, o));
}

__device__ __forceinline__ int block_count(int v) { return (int)block_sum((float)v); }

// A draw's row as the sampling sees it: the logits, with the entries' tokens (penalized or
// masked) and the extra output tokens (the pending token and the drafts before the draw in the
// draft history, each distinct one with how often it occurs) marked in a shared-memory bitmap,
// their values computed apart.
// A structured output's grammar allows only the tokens set in `allowed` (a bitmask uploaded with
// the draws): the others are -inf for the draw, never for the raw log-sum-exp and top logprobs.
struct Row {
  const bf16* x;
  int cols;
  const unsigned int* allowed;  // null: every token
  const unsigned int* listed;  // null when the draw has no entries
  const int2* entries;
  const float* biases;  // one per entry, added to its logit before the penalties; null: none
  int num_entries;
  const int* extra_tokens;  // distinct, those not among the entries first
  const int* extra_counts;
  int num_extra;
  int num_unlisted;  // extras not among the entries: listed after them, with their own counts
  float repetition, presence, frequency;
};

// The operations of penalizedLogit in draw.ts, each rounded alone (no fused multiply-add), on a
// logit already biased.
__device__ __forceinline__ float penalized(float v, int count, const Row& r) {
  if (count == MASKED) return NEG_INF;
  if (count == UNSEEN) return v;
  v = v > 0.f ? __fdiv_rn(v, r.repetition) : __fmul_rn(v, r.repetition);
  if (count > 0) v = __fsub_rn(v, __fadd_rn(__fmul_rn(r.frequency, (float)count), r.presence));
  return v;
}

__device__ __forceinline__ bool is_listed(const Row& r, int c) { return r.listed != nullptr && ((r.listed[c >> 5] >> (c & 31)) & 1u); }

__device__ __forceinline__ bool is_allowed(const Row& r, int c) { return r.allowed == nullptr || ((__ldg(r.allowed + (c >> 5)) >> (c & 31)) & 1u); }

// The value a draw sees for token c whose logit (or penalized value) is v.
__device__ __forceinline__ float drawable(const Row& r, int c, float v) { return is_allowed(r, c) ? v : NEG_INF; }

// How often `token` occurs among the extra output tokens.
__device__ __forceinline__ int extra_count(const Row& r, int token) {
  for (int i = 0; i < r.num_extra; i++)
    if (r.extra_tokens[i] == token) return r.extra_counts[i];
  return 0;
}

// An entry's count once its token's extra occurrences count too (entryCount in draw.ts).
__device__ __forceinline__ int entry_count(int count, int extra) {
  if (count == MASKED) return MASKED;
  if (count == UNSEEN) return extra > 0 ? extra : UNSEEN;
  return count + extra;
}

// f(token, value) for every entry's token (and every unlisted extra one), with its biased and
// penalized value.
template <typename F>
__device__ __forceinline__ void for_each_entry(const Row& r, F& f) {
  if (r.listed == nullptr) return;
  const int n = r.num_entries + r.num_unlisted;
  for (int e = threadIdx.x; e < n; e += THREADS) {
    int token, count;
    float v;
    if (e < r.num_entries) {
      const int2 entry = r.entries[e];
      token = entry.x;
      count = entry_count(entry.y, extra_count(r, token));
      v = bf16_to_f32(r.x[token]);
      if (r.biases != nullptr) v = __fadd_rn(v, r.biases[e]);
    } else {
      token = r.extra_tokens[e - r.num_entries];
      count = r.extra_counts[e - r.num_entries];
      v = bf16_to_f32(r.x[token]);
    }
    f(token, drawable(r, token, penalized(v, count, r)));
  }
}

// g(c, v) for every column c of a row of logits with its raw value v. One block reads the whole row, so
// its loads must overlap: 16-byte loads, LOADS_IN_FLIGHT of them a thread at a time, where the row
// is 16-byte aligned (an unaligned row, and the columns past the last 8, one by one).
constexpr int LOADS_IN_FLIGHT = 2;
template <typename G>
__device__ __forceinline__ void for_each_logit(const bf16* x, int cols, G& g) {
  const int vectors = (reinterpret_cast<unsigned long long>(x) & 15) == 0 ? cols >> 3 : 0;
  const uint4* x8 = reinterpret_cast<const uint4*>(x);
  auto visit8 = [&](const uint4 w, int c) {
    const unsigned int words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int k = 0; k < 4; k++) {
      g(c + 2 * k, __uint_as_float(words[k] << 16));
      g(c + 2 * k + 1, __uint_as_float(words[k] & 0xffff0000u));
    }
  };
  int i = threadIdx.x;
  for (; i + (LOADS_IN_FLIGHT - 1) * THREADS < vectors; i += LOADS_IN_FLIGHT * THREADS) {
    uint4 w[LOADS_IN_FLIGHT];
#pragma unroll
    for (int u = 0; u < LOADS_IN_FLIGHT; u++) w[u] = __ldg(x8 + i + u * THREADS);
#pragma unroll
    for (int u = 0; u < LOADS_IN_FLIGHT; u++) visit8(w[u], 8 * (i + u * THREADS));
  }
  for (; i < vectors; i += THREADS) visit8(__ldg(x8 + i), 8 * i);
  for (int c = 8 * vectors + threadIdx.x; c < cols; c += THREADS) g(c, bf16_to_f32(x[c]));
}

// f(token, value) for every token of the row, each once, with the value the sampling sees.
template <typename F>
__device__ __forceinline__ void for_each_value(const Row& r, F& f) {
  auto unlisted = [&](int c, float v) {
    if (!is_listed(r, c)) f(c, drawable(r, c, v));
  };
  for_each_logit(r.x, r.cols, unlisted);
  for_each_entry(r, f);
}

// The key of the k-th largest of the keys `for_each_key` hands its callback (key 0: the element
// takes no part), chosen 8 bits at a time from the top with a 256-bin histogram per pass; 0 when
// fewer than k elements take part. Counts are integers, so the result does not depend on order.
template <typename Keys>
__device__ unsigned int kth_largest(const Keys& for_each_key, int k) {
  __shared__ int histogram[256];
  __shared__ unsigned int chosen_prefix;
  __shared__ int chosen_remaining;
  unsigned int prefix = 0u, mask = 0u;
  int remaining = k;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < 256; b += THREADS) histogram[b] = 0;
    __syncthreads();
    auto count = [&](unsigned int key) {
      if (key == 0u || (key & mask) != prefix) return;
      const unsigned int bin = (key >> shift) & 0xffu;
      // Lanes with the same bin add once: most keys share their top bits, and 32 atomics on one
      // address would run one after another.
      const unsigned int peers = __match_any_sync(__activemask(), bin);
      if ((threadIdx.x & 31) == __ffs(peers) - 1) atomicAdd(&histogram[bin], __popc(peers));
    };
    for_each_key(count);
    __syncthreads();
    if (threadIdx.x == 0) {
      int above = 0, b = 255;
      while (b >= 0 && above + histogram[b] < remaining) above += histogram[b--];
      chosen_prefix = b < 0 ? 0u : prefix | ((unsigned int)b << shift);
      chosen_remaining = b < 0 ? 0 : remaining - above;
    }
    __syncthreads();
    if (chosen_remaining == 0) return 0u;
    prefix = chosen_prefix;
    remaining = chosen_remaining;
    mask |= 0xffu << shift;
    __syncthreads();  // chosen_* are read before the next pass writes them
  }
  return prefix;
}

// Key producers for kth_largest (NVRTC compiles no generic lambdas): the scaled values of a draw's
// row, and the raw logits.
struct ScaledKeys {
  const Row& r;
  float inv;
  template <typename F>
  __device__ void operator()(F& add) const {
    const float scale = inv;
    auto f = [&](int, float v) { add(v > NEG_INF ? order_key(__fmul_rn(v, scale)) : 0u); };
    for_each_value(r, f);
  }
};

struct RawKeys {
  const bf16* x;
  int cols;
  template <typename F>
  __device__ void operator()(F& add) const {
    auto f = [&](int, float v) { add(v == v ? order_key(v) : 0u); };
    for_each_logit(x, cols, f);
  }
};

// The key of the k-th largest scaled value, or KEY_FINITE (keep all) when fewer are finite.
__device__ __noinline__ unsigned int kth_largest_key(const Row& r, float inv, int k) {
  ScaledKeys keys{r, inv};
  const unsigned int key = kth_largest(keys, k);
  return key == 0u ? KEY_FINITE : key;
}

// The float whose order_key is `key`.
__device__ __forceinline__ float key_value(unsigned int key) { return __uint_as_float((key & 0x80000000u) ? (key & 0x7fffffffu) : ~key); }

// Σ exp(s - max_s) over the scaled values s with key >= `key`, and (in `count`) how many there are.
__device__ __noinline__ float mass_at_least(const Row& r, float inv, unsigned int key, float max_s, int& count) {
  float mass = 0.f;
  int n = 0;
  auto f = [&](int, float v) {
    if (!(v > NEG_INF)) return;
    const float s = __fmul_rn(v, inv);
    if (order_key(s) < key) return;
    mass += __expf(__fsub_rn(s, max_s));
    n++;
  };
  for_each_value(r, f);
  count = block_count(n);
  return block_sum(mass);
}

// Sorts a[0, size) (size a power of two) largest first.
__device__ void bitonic_sort_descending(unsigned int* a, int size) {
  for (int k = 2; k <= size; k <<= 1) {
    for (int j = k >> 1; j > 0; j >>= 1) {
      for (int i = threadIdx.x; i < size; i += THREADS) {
        const int partner = i ^ j;
        if (partner <= i) continue;
        const unsigned int x = a[i], y = a[partner];
        if ((i & k) == 0 ? x < y : x > y) {
          a[i] = y;
          a[partner] = x;
        }
      }
      __syncthreads();
    }
  }
}

// nucleus_key over the whole row: bisects the keys, one pass per step.
__device__ unsigned int nucleus_key_bisecting(const Row& r, float inv, unsigned int floor, float max_s, float target) {
  unsigned int lo = floor, hi = order_key(max_s);
  int unused;
  while (lo < hi) {
    const unsigned int mid = lo + (hi - lo + 1) / 2;
    if (mass_at_least(r, inv, mid, max_s, unused) >= target) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

// The largest key whose tokens at or above it hold top_p of the mass at or above `floor`. Tokens
// lighter than (1 - top_p) * mass / count hold less than (1 - top_p) of the mass all together, so
// the key lies among the heavier ones (half that bound leaves room for rounding): when they are
// few, as in a peaked distribution or after top-k, they are sorted in shared memory and summed
// largest first; else the whole row is bisected.
__device__ __noinline__ unsigned int nucleus_key(const Row& r, float inv, unsigned int floor, float max_s, float top_p) {
  __shared__ unsigned int candidates[MAX_CANDIDATES];
  __shared__ int num_candidates;
  __shared__ unsigned int chosen;
  int kept;
  const float mass = mass_at_least(r, inv, floor, max_s, kept);
  const float target = __fmul_rn(top_p, mass);
  const float lightest = 0.5f * (1.f - top_p) * mass / (float)kept;
  const unsigned int candidate_floor = max(floor, order_key(__fadd_rn(max_s, logf(lightest))));
  if (threadIdx.x == 0) num_candidates = 0;
  __syncthreads();
  auto gather = [&](int, float v) {
    if (!(v > NEG_INF)) return;
    const unsigned int key = order_key(__fmul_rn(v, inv));
    if (key < candidate_floor) return;
    const int slot = atomicAdd(&num_candidates, 1);
    if (slot < MAX_CANDIDATES) candidates[slot] = key;
  };
  for_each_value(r, gather);
  __syncthreads();
  const int n = num_candidates;
  if (n > MAX_CANDIDATES) return nucleus_key_bisecting(r, inv, floor, max_s, target);
  int size = 1;
  while (size < n) size <<= 1;
  for (int i = n + threadIdx.x; i < size; i += THREADS) candidates[i] = 0u;
  __syncthreads();
  bitonic_sort_descending(candidates, size);
  if (threadIdx.x == 0) {
    // Rounding can leave the target a hair out of reach: then every candidate stays.
    unsigned int key = candidates[n - 1];
    float sum = 0.f;
    for (int i = 0; i < n; i++) {
      sum += __expf(__fsub_rn(key_value(candidates[i]), max_s));
      if (sum >= target) {
        key = candidates[i];
        break;
      }
    }
    chosen = key;
  }
  __syncthreads();
  return chosen;
}

// The Gumbel-max draw among the tokens whose scaled value has key >= floor.
__device__ __noinline__ int draw_above(const Row& r, float inv, unsigned int seed, unsigned int floor) {
  float best = NEG_INF;
  int best_i = NO_INDEX;
  auto f = [&](int c, float v) {
    if (!(v > NEG_INF)) return;
    const float s = __fmul_rn(v, inv);
    if (order_key(s) < floor) return;
    const float g = __fadd_rn(s, gumbel_noise(seed, (unsigned int)c));
    if (beats(g, c, best, best_i)) {
      best = g;
      best_i = c;
    }
  };
  for_each_value(r, f);
  block_argmax(best, best_i);
  return best_i == NO_INDEX ? -1 : best_i;
}

// How many raw (non-NaN) logits have key >= `key`.
__device__ __noinline__ int raw_count_at_least(const bf16* x, int cols, unsigned int key) {
  int n = 0;
  auto f = [&](int, float v) { n += v == v && order_key(v) >= key; };
  for_each_logit(x, cols, f);
  return block_count(n);
}

// A few largest raw logits, one pass each: the best that the previous one beats (beats' order).
// Drafting asks one or a tree's few candidates a row, where this takes fewer passes than selection.
constexpr int TOP_BY_PASSES = 4;
__device__ __noinline__ void top_raw_by_passes(const bf16* x, int cols, int num_top, float lse, int* ids, float* logprobs) {
  float prev = -NEG_INF;  // +inf: every value comes after it
  int prev_i = -1;
  for (int i = 0; i < num_top; i++) {
    float best = NEG_INF;
    int best_i = NO_INDEX;
    auto f = [&](int c, float v) {
      if (beats(prev, prev_i, v, c) && beats(v, c, best, best_i)) {
        best = v;
        best_i = c;
      }
    };
    for_each_logit(x, cols, f);
    block_argmax(best, best_i);
    if (threadIdx.x == 0) {
      ids[i] = best_i == NO_INDEX ? -1 : best_i;
      logprobs[i] = best_i == NO_INDEX ? NEG_INF : best - lse;
    }
    prev = best;
    prev_i = best_i;  // once nothing is left (NO_INDEX), nothing comes after it either
  }
}

// The `num_top` largest raw logits, largest first, lower index among equals, as ids and logprobs.
__device__ __noinline__ void top_raw(const bf16* x, int cols, int num_top, float lse, int* ids, float* logprobs) {
  if (num_top <= TOP_BY_PASSES) {
    top_raw_by_passes(x, cols, num_top, lse, ids, logprobs);
    return;
  }
  __shared__ int chosen[MAX_TOP];
  __shared__ int num_chosen;
  const int k = min(num_top, raw_count_at_least(x, cols, KEY_NEG_INF));
  unsigned int lo = KEY_NEG_INF;
  if (k > 0) {
    RawKeys keys{x, cols};
    lo = kth_largest(keys, k);
  }
  // Fewer than k logits are above the k-th largest: take them all, then its ties by index.
  if (threadIdx.x == 0) num_chosen = 0;
  __syncthreads();
  for (int c = threadIdx.x; c < cols && k > 0; c += THREADS) {
    const float v = bf16_to_f32(x[c]);
    if (v == v && order_key(v) > lo) chosen[atomicAdd(&num_chosen, 1)] = c;
  }
  __syncthreads();
  for (int last = -1; num_chosen < k;) {
    int next = NO_INDEX;
    for (int c = last + 1 + threadIdx.x; c < cols; c += THREADS) {
      const float v = bf16_to_f32(x[c]);
      if (v == v && order_key(v) == lo) {
        next = c;
        break;
      }
    }
    float tie = 0.f;  // equal values: block_argmax keeps the lowest index
    block_argmax(tie, next);
    if (next == NO_INDEX) break;
    __syncthreads();
    if (threadIdx.x == 0) chosen[num_chosen++] = next;
    __syncthreads();
    last = next;
  }
  if (threadIdx.x == 0) {
    for (int i = 1; i < k; i++) {  // insertion sort of at most MAX_TOP
      const int c = chosen[i];
      const float v = bf16_to_f32(x[c]);
      int j = i - 1;
      for (; j >= 0 && beats(v, c, bf16_to_f32(x[chosen[j]]), chosen[j]); j--) chosen[j + 1] = chosen[j];
      chosen[j + 1] = c;
    }
    for (int i = 0; i < num_top; i++) {
      ids[i] = i < k ? chosen[i] : -1;
      logprobs[i] = i < k ? bf16_to_f32(x[chosen[i]]) - lse : NEG_INF;
    }
  }
}

// out_ids[d], out_logprobs[d]: draw d's token (-1 when nothing is finite) and its raw logprob;
// top_ids / top_logprobs [draws, top_width]: its top raw alternatives. prev_ids: the previous
// pass's ids, where pending tokens are read. history: the draft history, DRAFT_HISTORY_COLUMNS ids
// a row, where a draw reads the drafts before it and writes its own token after them (the draws of
// one pass name distinct rows, each reading only its own before writing). Dynamic shared memory: (cols + 31) / 32 words when
// any draw has entries (the bitmap of listed tokens), else none. grid (draws), block THREADS.
extern "C" __global__ void __launch_bounds__(THREADS) sample_rows_kernel(int* __restrict__ out_ids, float* __restrict__ out_logprobs,
                                                                       int* __restrict__ top_ids, float* __restrict__ top_logprobs,
                                                                       const bf16* __restrict__ x, int cols, const Draw* __restrict__ draws,
                                                                       const int2* __restrict__ entries, const int* __restrict__ prev_ids,
                                                                       int* __restrict__ history, int top_width) {
  PDL_PROLOGUE();
  extern __shared__ unsigned int listed_bits[];
  const Draw d = draws[blockIdx.x];
  Row r;
  r.x = x + (long long)d.row * cols;
  r.cols = cols;
  r.allowed = d.allowed_begin >= 0 ? reinterpret_cast<const unsigned int*>(entries) + d.allowed_begin : nullptr;
  r.entries = entries + d.entries_begin;
  r.biases = d.bias_begin >= 0 ? reinterpret_cast<const float*>(entries) + d.bias_begin : nullptr;
  r.num_entries = d.entries_end - d.entries_begin;
  r.repetition = d.repetition;
  r.presence = d.presence;
  r.frequency = d.frequency;
  // The extra output tokens, distinct with their counts (at most MAX_EXTRA: one thread gathers them).
  __shared__ int extra_tokens[MAX_EXTRA], extra_counts[MAX_EXTRA];
  __shared__ int num_extra, num_unlisted;
  int* history_row = d.history_row >= 0 ? history + (long long)d.history_row * DRAFT_HISTORY_COLUMNS : nullptr;
  if (threadIdx.x == 0) {
    int n = 0;
    const int length = history_row != nullptr ? d.history_length : 0;
    for (int i = -1; i < length; i++) {
      const int token = i < 0 ? (d.pending >= 0 ? prev_ids[d.pending] : -1) : history_row[i];
      if (token < 0 || token >= cols) continue;  // nothing drawn, or no token of this row
      int at = 0;
      while (at < n && extra_tokens[at] != token) at++;
      if (at == n) {
        extra_tokens[n] = token;
        extra_counts[n++] = 0;
      }
      extra_counts[at]++;
    }
    num_extra = n;
  }
  __syncthreads();
  r.extra_tokens = extra_tokens;
  r.extra_counts = extra_counts;
  r.num_extra = num_extra;
  r.num_unlisted = 0;
  r.listed = nullptr;
  if (r.num_entries > 0 || r.num_extra > 0) {
    for (int w = threadIdx.x; w < (cols + 31) >> 5; w += THREADS) listed_bits[w] = 0u;
    __syncthreads();
    for (int e = threadIdx.x; e < r.num_entries; e += THREADS) {
      const int token = r.entries[e].x;
      atomicOr(&listed_bits[token >> 5], 1u << (token & 31));
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      // The extras the entries do not list move to the front, and are listed now.
      int unlisted = 0;
      for (int i = 0; i < r.num_extra; i++) {
        const int token = extra_tokens[i];
        if ((listed_bits[token >> 5] >> (token & 31)) & 1u) continue;
        const int count = extra_counts[i];
        extra_tokens[i] = extra_tokens[unlisted];
        extra_counts[i] = extra_counts[unlisted];
        extra_tokens[unlisted] = token;
        extra_counts[unlisted++] = count;
      }
      for (int i = 0; i < unlisted; i++) atomicOr(&listed_bits[extra_tokens[i] >> 5], 1u << (extra_tokens[i] & 31));
      num_unlisted = unlisted;
    }
    __syncthreads();
    r.num_unlisted = num_unlisted;
    r.listed = listed_bits;
  }

  // One pass: the raw log-sum-exp, the largest value, and the draw itself when nothing truncates.
  const float inv = d.inv_temperature;
  const bool greedy = inv == 0.f;
  float m = NEG_INF, s = 0.f, max_v = NEG_INF, best = NEG_INF;
  int best_i = NO_INDEX;
  auto consider = [&](int c, float v) {
    if (!(v > NEG_INF)) return;
    max_v = fmaxf(max_v, v);
    const float key = greedy ? v : __fadd_rn(__fmul_rn(v, inv), gumbel_noise(d.seed, (unsigned int)c));
    if (beats(key, c, best, best_i)) {
      best = key;
      best_i = c;
    }
  };
  auto first_pass = [&](int c, float v) {
    if (v > m) {  // the running log-sum-exp: rescaled only when the maximum moves
      s = s * __expf(m - v) + 1.f;
      m = v;
    } else if (v > NEG_INF) {
      s += __expf(v - m);
    }
    if (!is_listed(r, c)) consider(c, drawable(r, c, v));
  };
  for_each_logit(r.x, r.cols, first_pass);
  for_each_entry(r, consider);
  block_lse(m, s);
  max_v = block_max(max_v);
  block_argmax(best, best_i);
  int token = d.scored >= 0 ? d.scored : best_i == NO_INDEX ? -1 : best_i;
  const float lse = m + logf(s);

  const bool truncates = d.top_k > 0 || d.top_p < 1.f || d.log_min_p > NEG_INF;
  if (!greedy && d.scored < 0 && token >= 0 && truncates) {
    const float max_s = __fmul_rn(max_v, inv);
    unsigned int floor = KEY_FINITE;
    if (d.log_min_p > NEG_INF) floor = max(floor, order_key(__fadd_rn(max_s, d.log_min_p)));
    if (d.top_k > 0) floor = max(floor, kth_largest_key(r, inv, d.top_k));
    if (d.top_p < 1.f) floor = max(floor, nucleus_key(r, inv, floor, max_s, d.top_p));
    token = draw_above(r, inv, d.seed, floor);
  }
  if (threadIdx.x == 0) {
    out_ids[blockIdx.x] = token;
    if (history_row != nullptr) history_row[d.history_length] = token;
    out_logprobs[blockIdx.x] = token >= 0 ? bf16_to_f32(r.x[token]) - lse : NEG_INF;
  }
  if (top_width > 0) {
    int* ids = top_ids + (long long)blockIdx.x * top_width;
    float* logprobs = top_logprobs + (long long)blockIdx.x * top_width;
    const int num_top = min(d.num_top, top_width);
    top_raw(r.x, cols, num_top, lse, ids, logprobs);
    if (threadIdx.x == 0) {
      for (int i = num_top; i < top_width; i++) {
        ids[i] = -1;
        logprobs[i] = NEG_INF;
      }
    }
  }
}
