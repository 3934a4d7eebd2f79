// What the decode attention kernels (decode-attention.cu, decode-attention-mma.cu) share about
// their partitions' output.
#pragma once
#include "common.cuh"
#include "decode-split.cuh"

// A partition that sees no key: where the decode uses several (`used`, decode-split.cuh) its rows
// of the partials say so (max -inf, sum 0, which merge_partitions_if_last skips), else the decode's
// output rows of the kv head's GROUP query heads are zeros. head0: the first query head's row in the
// partials, whose rows are num_partitions (the launch's) apart.
template <int GROUP_HEADS, int HEAD_D, int THREADS_N>
__device__ __forceinline__ void write_empty_partition(bf16* out, float* part_ml, long long head0, int part, int num_partitions, int used, int token,
                                                      int num_heads, int kvh) {
  if (used > 1) {
    if (threadIdx.x < GROUP_HEADS) {
      part_ml[((head0 + threadIdx.x) * num_partitions + part) * 2] = NEG_INF;
      part_ml[((head0 + threadIdx.x) * num_partitions + part) * 2 + 1] = 0.f;
    }
  } else {
    for (int i = threadIdx.x; i < GROUP_HEADS * HEAD_D; i += THREADS_N) out[(long long)token * num_heads * HEAD_D + kvh * GROUP_HEADS * HEAD_D + i] = 0;
  }
}

// Where the decode uses several partitions (`used` > 1, decode-split.cuh), the last CTA of a
// (decode, kv head) to write its partials merges them into the GROUP_HEADS query heads' output rows,
// so no kernel of its own has to follow; every thread of each used partition's CTA calls it (the
// empty ones too; partials rows are num_partitions apart, the launch's count). First a warp a head:
// the lanes take the partitions for the running max and each one's weight exp2(m_p - m) (-1 for an
// empty partition, whose accumulator was never written), kept in `scratch` (the kernel's shared
// memory, free by then: withMergeScratch in decode-attention.ts, GROUP_HEADS · (used + 1) floats) with
// the head's 1 / Σ weight · l_p. Then every thread takes 4 columns of a head at a time, the
// weighted sum in partition order, its loads unconditional (an empty partition's product is
// selected away, never multiplied) so that they are all in flight at once: the merge sits at the
// end of the launch, and one load's latency after another's would be its whole cost. The sink,
// with WITH_SINKS, joins the denominator here, once: the partitions' sums leave it out. counters:
// CudaDevice.arrivalCounters, one per (decode, kv head) of the grid.
template <int GROUP_HEADS, int HEAD_D, int THREADS_N, bool WITH_SINKS>
__device__ __forceinline__ void merge_partitions_if_last(bf16* out, const float* part_acc, const float* part_ml, long long head0, int num_partitions,
                                                         int used, int token, int num_heads, int kvh, const bf16* sinks, unsigned int* counters,
                                                         float* scratch) {
  static_assert(HEAD_D % 4 == 0, "a thread merges 4 columns at a time");
  if (!last_to_arrive(counters + (long long)blockIdx.y * gridDim.x + blockIdx.x, used)) return;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  float* inv_sum = scratch + GROUP_HEADS * used;
  for (int h = warp; h < GROUP_HEADS; h += THREADS_N / 32) {
    const long long row0 = (head0 + h) * num_partitions;
    float* weight = scratch + h * used;
    float m = NEG_INF;
    for (int p = lane; p < used; p += 32) {
      const float2 ml = load_from_l2(reinterpret_cast<const float2*>(part_ml) + row0 + p);
      if (ml.y > 0.f) m = fmaxf(m, ml.x);
    }
    m = warp_max(m);
    float l = 0.f;
    for (int p = lane; p < used; p += 32) {
      const float2 ml = load_from_l2(reinterpret_cast<const float2*>(part_ml) + row0 + p);
      weight[p] = ml.y > 0.f ? fast_exp2(ml.x - m) : -1.f;
      if (ml.y > 0.f) l += weight[p] * ml.y;
    }
    l = warp_sum(l);
    if (lane == 0) inv_sum[h] = WITH_SINKS ? sink_normalizer(m, l, bf16_to_f32(sinks[kvh * GROUP_HEADS + h]) * LOG2E) : l > 0.f ? 1.f / l : 0.f;
  }
  __syncthreads();
  constexpr int QUADS = HEAD_D / 4;
  for (int i = threadIdx.x; i < GROUP_HEADS * QUADS; i += THREADS_N) {
    const int h = i / QUADS, c = i % QUADS * 4;
    const float* weight = scratch + h * used;
    const float4* acc = reinterpret_cast<const float4*>(part_acc + (head0 + h) * num_partitions * HEAD_D + c);
    float4 o = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 8
    for (int p = 0; p < used; p++) {
      const float4 v = load_from_l2(acc + (long long)p * QUADS);
      const float w = weight[p];
      o.x += w >= 0.f ? w * v.x : 0.f;
      o.y += w >= 0.f ? w * v.y : 0.f;
      o.z += w >= 0.f ? w * v.z : 0.f;
      o.w += w >= 0.f ? w * v.w : 0.f;
    }
    const float inv = inv_sum[h];
    bf16* dst = out + (long long)token * num_heads * HEAD_D + (kvh * GROUP_HEADS + h) * HEAD_D + c;
    *reinterpret_cast<uint2*>(dst) = make_uint2(pack_bf16x2(o.x * inv, o.y * inv), pack_bf16x2(o.z * inv, o.w * inv));
  }
}
