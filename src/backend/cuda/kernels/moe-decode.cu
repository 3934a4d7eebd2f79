// A whole mixture-of-experts block for one token (batch-1 decode) in one launch: the router's
// f32 logits, the routing, the routed experts' gate/up rows with the activation, their down rows
// with the weighted sum, and a shared expert (DeepSeek, Qwen2-MoE) with its optional sigmoid gate.
// The split path (moe-route.cu, moe-gemv.cu, the dense GEMVs and add-into.cu) takes six launches
// for this with a shared expert and four without, each a dependent stage that pays a launch gap
// and a memory round trip before its first weight arrives; at batch 1 an MoE layer's weights are
// only ~100 MB, so those fixed costs weigh as much as the streaming (docs/cuda-backend.md).
//
// A persistent grid (every block resident: the launcher sizes it from the occupancy the driver
// reports) runs three phases separated by two grid-wide barriers:
//   0. router rows (and the shared expert's gate row) -> f32 logits;
//   1. every block routes the token itself from the logits (warp 0, moe-route.cuh; the same
//      deterministic code on the same values, so every block agrees) while its other warps stream
//      the shared expert's gate/up rows; then the routed experts' gate/up rows. Each warp then
//      prefetches into L2 the down rows it will need, so that memory stays busy across barrier 2;
//   2. each warp gives output rows: Σ over slots of weight · round(down_s · h_s + b_s), rounded,
//      plus σ(gate) · round(shared_down · h_shared), rounded again, as the split path rounds.
// Rounding follows the split path: products to bf16 before the activation, h to bf16, each
// expert's down product to bf16, the weighted sum in f32 rounded once, the shared expert's down
// product rounded, then added with fmaf and rounded. Only the f32 summation order differs.
//
// MXFP4=1 (gpt-oss): the routed experts' gate/up and down rows are MXFP4 (mxfp4.cuh), a 16-byte
// chunk one block of 32 values with its scale code in gate_up_scales / down_scales, as in
// moe-gemv.cu; the router stays bf16, and there is no shared expert (m = 0).
#include "common.cuh"
#include "gated-activation.cuh"
#include "moe-route.cuh"
#include "mxfp4.cuh"

// nvcc-check: -DPER_LANE=4 -DACT=0
// nvcc-check: -DPER_LANE=2 -DACT=1
// nvcc-check: -DPER_LANE=1 -DACT=2
// nvcc-check: -DPER_LANE=1 -DACT=2 -DMXFP4=1

#ifndef ACT
#error "compile with -DACT=<0 silu | 1 gelu-tanh | 2 clamped swiglu | 3 gelu | 4 relu> (gated-activation.cuh)"
#endif

#ifndef MXFP4
#define MXFP4 0
#endif
#define WARPS 8
#define THREADS (32 * WARPS)
// 16-byte weight loads in flight per lane and matrix.
#define UNROLL 8
// Lane groups of an output row: one per routed slot and per n-wide piece of the shared expert.
#define MAX_SEGMENTS 32

__device__ __forceinline__ float dot8(const float* a, const float* b) {
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < 8; i++) s = fmaf(a[i], b[i], s);
  return s;
}

__device__ __forceinline__ float round_bf16(float v) { return bf16_to_f32(f32_to_bf16(v)); }

// A 16-byte chunk of weights as floats: 8 bf16, or (FP4) 32 MXFP4 values times 2^-14.
template <bool FP4>
__device__ __forceinline__ void decode_chunk(const uint4 v, float* w) {
  if (FP4) mxfp4_decode32(v, w);
  else unpack8(v, w);
}

// Σ over a chunk of w · x, x the VALS / 8 16-byte chunks of bf16 values at xc.
template <int VALS>
__device__ __forceinline__ float dot_chunk(const float* w, const uint4* xc) {
  float s = 0.f;
#pragma unroll
  for (int j = 0; j < VALS / 8; j++) {
    float xf[8];
    unpack8(xc[j], xf);
    s += dot8(w + 8 * j, xf);
  }
  return s;
}

// acc + sum, times chunk c's scale (2^14 undoing the decoding's 2^-14) for MXFP4.
template <bool FP4>
__device__ __forceinline__ float add_chunk(float acc, float sum, const unsigned char* scales, int c) {
  return FP4 ? fmaf(sum, mxfp4_scale_2p14(scales[c]), acc) : acc + sum;
}

__device__ __forceinline__ uint4 load_cg_v4(const uint4* p) {
  uint4 v;
  asm volatile("ld.global.cg.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}

__device__ __forceinline__ unsigned int load_acquire(const unsigned int* p) {
  unsigned int v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

// prefetch_l2 (common.cuh) keeps normal eviction priority: an evict_last mark could outlive this
// launch and crowd later layers' weights out of L2; the gate/up rows still streaming after a
// warp's prefetch of its down rows (at most one round, ~17 MB) leave the ~25 MB of those room.

// Phase 0's router rows (and the shared gate's row) this warp reads, into L2 before the wait on the
// kernel before: a row's lines one a lane.
__device__ __forceinline__ void prefetch_router_rows(const uint4* router, const uint4* shared_gate, int num_experts, int hidden) {
  const int lane = threadIdx.x & 31;
  const int gw = blockIdx.x * WARPS + (threadIdx.x >> 5), num_warps = gridDim.x * WARPS;
  const int hidden8 = hidden / 8;
  const int items = shared_gate == nullptr ? num_experts : num_experts + 1;
  for (int item = gw; item < items; item += num_warps) {
    const uint4* row = item == num_experts ? shared_gate : router + (long long)item * hidden8;
    for (int c = lane * 8; c < hidden8; c += 32 * 8) prefetch_l2(row + c);
  }
}

// Every block waits until `target` blocks have arrived at *arrived (each barrier of a launch adds
// gridDim.x). Writes before it (made visible by the fence) are read after it through L2 (ld.cg).
__device__ __forceinline__ void grid_barrier(unsigned int* arrived, unsigned int target) {
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    atomicAdd(arrived, 1u);
    while (load_acquire(arrived) < target) asm volatile("nanosleep.u32 32;");
    __threadfence();
  }
  __syncthreads();
}

// The warp's sums of one or two weight rows (chunks 16-byte chunks each) times x (shared memory),
// returned on every lane. MATS = 2: a gate row and an up row, loads of both in flight together.
// FP4: the rows are MXFP4 (a chunk 32 values, its scale code at s0[c] / s1[c]); else bf16 (8 values).
template <int MATS, bool FP4>
__device__ __forceinline__ void rows_dot_x(const uint4* w0, const uint4* w1, const unsigned char* s0, const unsigned char* s1, const uint4* xs, int chunks,
                                           float& a0, float& a1) {
  constexpr int VALS = FP4 ? 32 : 8;
  const int lane = threadIdx.x & 31;
  a0 = 0.f;
  a1 = 0.f;
  for (int base = 0; base < chunks; base += 32 * UNROLL) {
    uint4 v0[UNROLL], v1[UNROLL];
#pragma unroll
    for (int u = 0; u < UNROLL; u++) {
      const int c = base + u * 32 + lane;
      v0[u] = c < chunks ? load_streaming(w0 + c) : make_uint4(0u, 0u, 0u, 0u);
      if (MATS == 2) v1[u] = c < chunks ? load_streaming(w1 + c) : make_uint4(0u, 0u, 0u, 0u);
    }
#pragma unroll
    for (int u = 0; u < UNROLL; u++) {
      const int c = base + u * 32 + lane;
      if (c < chunks) {
        float wf[VALS];
        decode_chunk<FP4>(v0[u], wf);
        a0 = add_chunk<FP4>(a0, dot_chunk<VALS>(wf, xs + c * (VALS / 8)), s0, c);
        if (MATS == 2) {
          decode_chunk<FP4>(v1[u], wf);
          a1 = add_chunk<FP4>(a1, dot_chunk<VALS>(wf, xs + c * (VALS / 8)), s1, c);
        }
      }
    }
  }
  a0 = warp_sum(a0);
  if (MATS == 2) a1 = warp_sum(a1);
}

// One segment of an output row's down products: `len` 16-byte chunks of a weight row (MXFP4 for
// routed slots of an MXFP4 build: their scale codes at s) and the h values they multiply.
struct Segment {
  const uint4* w;
  const unsigned char* s;
  int h_offset;  // in 16-byte chunks, into the staged h
  int len;       // 0: nothing here (a slot held by another device, or past the last segment)
};

// Segment g of output row i. Segments 0 .. top_k - 1 are the routed slots (expert ids in shared
// memory; rows of nc chunks); the rest are the shared expert's row split in pieces of n8 chunks.
__device__ __forceinline__ Segment row_segment(int g, int i, const int* ids, const uint4* down, const unsigned char* down_scales,
                                               const uint4* shared_down, int first, int count, int top_k, int segments, int hidden, int n8,
                                               int nc, int m8) {
  Segment seg = {nullptr, nullptr, 0, 0};
  if (g < top_k) {
    const int e = ids[g] - first;
    const long long row = (long long)e * hidden + i;
    if (e >= 0 && e < count) seg = {down + row * nc, MXFP4 ? down_scales + row * nc : nullptr, g * n8, nc};
  } else if (g < segments) {
    const int q = g - top_k;
    seg = {shared_down + (long long)i * m8 + q * n8, nullptr, top_k * n8 + q * n8, min(n8, m8 - q * n8)};
  }
  return seg;
}

// PDL (KEEL_PDL=1) keeps the barriers safe although the grid is sized for an empty GPU. Launched as
// a dependent, some of this grid's blocks may share the SMs with the previous kernel's last wave and
// the rest wait for room; that kernel's blocks wait on nothing of this grid and finish, so every
// block of this grid becomes resident. And the next kernel launches only once every block here has
// passed PDL_PROLOGUE() (resident, then), so it cannot take the room of a block still to come.
// grid: at most the resident blocks (the barriers wait for every block), block THREADS, dynamic
// shared memory 16 · (hidden / 8 + (top_k · n + m) / 8) bytes. x [hidden]; router [E, hidden],
// router_bias [E] or null; selection_bias [E] (bias_kind) or null; gate_up [count, 2n, hidden],
// down [count, hidden, n], their biases [count, 2n] and [count, hidden] or null; shared_gate_up
// [2m, hidden] and shared_down [hidden, m], or null with m = 0; shared_gate [hidden] or null.
// Scratch: logits f32 [E + 1] (the last: the shared gate's value), h bf16 [top_k · n + m].
// sync: two counters, zero before the launch and left zero after it. hidden, n, m multiples of 8;
// top_k plus the shared expert's pieces at most MAX_SEGMENTS. MXFP4: gate_up and down are the
// blocks, their scale codes gate_up_scales [count, 2n, hidden / 32] and down_scales [count, hidden,
// n / 32] (else null); hidden and n multiples of 32, m = 0.
extern "C" __global__ void __launch_bounds__(THREADS, 2) moe_decode_kernel(
    bf16* __restrict__ out, const uint4* __restrict__ x, const uint4* __restrict__ router, const bf16* __restrict__ router_bias,
    const void* __restrict__ selection_bias, const uint4* __restrict__ gate_up, const uint4* __restrict__ down,
    const unsigned char* __restrict__ gate_up_scales, const unsigned char* __restrict__ down_scales, const bf16* __restrict__ gate_up_bias, const bf16* __restrict__ down_bias, const uint4* __restrict__ shared_gate_up,
    const uint4* __restrict__ shared_down, const uint4* __restrict__ shared_gate, float* logits, bf16* h, unsigned int* sync, int hidden,
    int n, int m, int num_experts, int top_k, int first, int count, int scoring, int bias_kind, int group_score, int num_groups,
    int topk_groups, int normalize, float scale, float softcap, float alpha, float limit) {
  PDL_PREFETCH(prefetch_router_rows(router, shared_gate, num_experts, hidden));
  PDL_PROLOGUE();
  extern __shared__ uint4 smem[];
  __shared__ int ids[MAX_SEGMENTS];
  __shared__ float weights[MAX_SEGMENTS];
  const int hidden8 = hidden / 8, n8 = n / 8, m8 = m / 8;
  // 16-byte chunks of a routed expert's gate/up row and down row.
  constexpr int ROUTED_VALS = MXFP4 ? 32 : 8;
  const int kc = hidden / ROUTED_VALS, nc = n / ROUTED_VALS;
  uint4* xs = smem;
  uint4* hs = smem + hidden8;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int gw = blockIdx.x * WARPS + warp, num_warps = gridDim.x * WARPS;
  for (int c = threadIdx.x; c < hidden8; c += THREADS) xs[c] = x[c];
  __syncthreads();

  // Phase 0: router logits (f32, bias added unrounded) and the shared gate's value (rounded to bf16).
  const int gate_item = shared_gate == nullptr ? num_experts : num_experts + 1;
  for (int item = gw; item < gate_item; item += num_warps) {
    float a, unused;
    const bool is_gate = item == num_experts;
    rows_dot_x<1, false>(is_gate ? shared_gate : router + (long long)item * hidden8, nullptr, nullptr, nullptr, xs, hidden8, a, unused);
    if (lane == 0) logits[item] = is_gate ? round_bf16(a) : a + (router_bias == nullptr ? 0.f : bf16_to_f32(router_bias[item]));
  }
  grid_barrier(sync, gridDim.x);

  // Phase 1: warp 0 routes while the other warps stream the shared expert's gate/up rows.
  if (warp == 0) {
    const RouteRule rule = {scoring, bias_kind, group_score, 1, num_groups, topk_groups, normalize, scale, softcap};
    int rank;
    route_token(logits, selection_bias, ids, weights, 0, num_experts, top_k, rule, rank);
  } else {
    const int helpers = gridDim.x * (WARPS - 1);
    for (int j = blockIdx.x * (WARPS - 1) + warp - 1; j < m; j += helpers) {
      float g, u;
      const uint4* wg = shared_gate_up + (long long)j * hidden8;
      rows_dot_x<2, false>(wg, wg + (long long)m * hidden8, nullptr, nullptr, xs, hidden8, g, u);
      if (lane == 0) h[top_k * n + j] = f32_to_bf16(gated_activation(round_bf16(g), round_bf16(u), alpha, limit));
    }
  }
  __syncthreads();
  for (int item = gw; item < top_k * n; item += num_warps) {
    const int s = item / n, j = item - s * n;
    const int e = ids[s] - first;
    if (e < 0 || e >= count) continue;
    float g, u;
    const long long gate_row = (long long)e * 2 * n + j, up_row = gate_row + n;
    const unsigned char* sg = MXFP4 ? gate_up_scales + gate_row * kc : nullptr;
    const unsigned char* su = MXFP4 ? gate_up_scales + up_row * kc : nullptr;
    rows_dot_x<2, MXFP4 != 0>(gate_up + gate_row * kc, gate_up + up_row * kc, sg, su, xs, kc, g, u);
    if (lane == 0) {
      const float bg = gate_up_bias == nullptr ? 0.f : bf16_to_f32(gate_up_bias[(long long)e * 2 * n + j]);
      const float bu = gate_up_bias == nullptr ? 0.f : bf16_to_f32(gate_up_bias[(long long)e * 2 * n + n + j]);
      h[s * n + j] = f32_to_bf16(gated_activation(round_bf16(g + bg), round_bf16(u + bu), alpha, limit));
    }
  }

  // The down rows this warp reads after the barrier, into L2 now. Lane group g (G lanes) takes segment g.
  const int segments = top_k + (m8 + n8 - 1) / n8;
  int lanes_per_segment = 32;
  while (lanes_per_segment * segments > 32) lanes_per_segment >>= 1;
  const int g = lane / lanes_per_segment, r = lane % lanes_per_segment;
  for (int i = gw; i < hidden; i += num_warps) {
    const Segment seg = row_segment(g, i, ids, down, down_scales, shared_down, first, count, top_k, segments, hidden, n8, nc, m8);
    for (int c = r * 8; c < seg.len; c += lanes_per_segment * 8) prefetch_l2(seg.w + c);
    if (r == 0 && seg.len > 0) prefetch_l2(seg.w + seg.len - 1);
  }
  grid_barrier(sync, 2 * gridDim.x);

  // Phase 2: h staged in shared memory (each warp reads all of it), then the output rows.
  const int h8 = top_k * n8 + m8;
  const uint4* h_chunks = reinterpret_cast<const uint4*>(h);
  for (int c = threadIdx.x; c < h8; c += THREADS) hs[c] = load_cg_v4(h_chunks + c);
  const float shared_scale = shared_gate == nullptr ? 1.f : 1.f / (1.f + __expf(-load_cg(logits + num_experts)));
  __syncthreads();
  for (int i = gw; i < hidden; i += num_warps) {
    const Segment seg = row_segment(g, i, ids, down, down_scales, shared_down, first, count, top_k, segments, hidden, n8, nc, m8);
    const uint4* hseg = hs + seg.h_offset;
    float partial = 0.f;
    for (int base = r; base < seg.len; base += lanes_per_segment * UNROLL) {
      uint4 v[UNROLL];
#pragma unroll
      for (int u = 0; u < UNROLL; u++) {
        const int c = base + u * lanes_per_segment;
        v[u] = c < seg.len ? load_streaming(seg.w + c) : make_uint4(0u, 0u, 0u, 0u);
      }
#pragma unroll
      for (int u = 0; u < UNROLL; u++) {
        const int c = base + u * lanes_per_segment;
        if (c < seg.len) {
          // Shared-expert segments are bf16; routed ones are MXFP4 in an MXFP4 build (which has no shared expert).
          float wf[ROUTED_VALS];
          decode_chunk<MXFP4 != 0>(v[u], wf);
          partial = add_chunk<MXFP4 != 0>(partial, dot_chunk<ROUTED_VALS>(wf, hseg + c * (ROUTED_VALS / 8)), seg.s, c);
        }
      }
    }
    // Sum each lane group (aligned, a power of two wide), then combine the segments in order.
    for (int o = lanes_per_segment / 2; o > 0; o >>= 1) partial += __shfl_xor_sync(FULL_MASK, partial, o);
    float routed = 0.f;
    for (int s = 0; s < top_k; s++) {
      const float dot = __shfl_sync(FULL_MASK, partial, s * lanes_per_segment);
      const int e = ids[s] - first;
      if (e >= 0 && e < count) {
        const float b = down_bias == nullptr ? 0.f : bf16_to_f32(down_bias[(long long)e * hidden + i]);
        routed += weights[s] * round_bf16(dot + b);
      }
    }
    float result = round_bf16(routed);
    if (m > 0) {
      float shared = 0.f;
      for (int s = top_k; s < segments; s++) shared += __shfl_sync(FULL_MASK, partial, s * lanes_per_segment);
      result = fmaf(shared_scale, round_bf16(shared), result);
    }
    if (lane == 0) out[i] = f32_to_bf16(result);
  }

  // The last block out resets the counters for the next launch: every block has passed both barriers.
  if (threadIdx.x == 0 && atomicAdd(sync + 1, 1u) == gridDim.x - 1) {
    atomicExch(sync, 0u);
    atomicExch(sync + 1, 0u);
  }
}
