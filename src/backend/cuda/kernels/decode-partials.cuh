// What the decode attention kernels (decode-attention.cu, decode-attention-mma.cu) share about
// their partitions' output.
#pragma once
#include "common.cuh"

// A partition that sees no key (a shorter sequence of the batch): with partitions its rows of the
// partials say so (max -inf, sum 0, which merge_partitions_if_last skips), else the decode's output
// rows of the kv head's GROUP query heads are zeros. head0: the first query head's row in the partials.
template <int GROUP_HEADS, int HEAD_D, int THREADS_N>
__device__ __forceinline__ void write_empty_partition(bf16* out, float* part_ml, long long head0, int part, int num_partitions, int token,
                                                      int num_heads, int kvh) {
  if (num_partitions > 1) {
    if (threadIdx.x < GROUP_HEADS) {
      part_ml[((head0 + threadIdx.x) * num_partitions + part) * 2] = NEG_INF;
      part_ml[((head0 + threadIdx.x) * num_partitions + part) * 2 + 1] = 0.f;
    }
  } else {
    for (int i = threadIdx.x; i < GROUP_HEADS * HEAD_D; i += THREADS_N) out[(long long)token * num_heads * HEAD_D + kvh * GROUP_HEADS * HEAD_D + i] = 0;
  }
}

// With partitions (num_partitions > 1), the last CTA of a (decode, kv head) to write its partials
// merges all of them into the GROUP_HEADS query heads' output rows, so no kernel of its own has to
// follow; every thread of every partition's CTA calls it (the empty ones too). A warp a head: the
// lanes take the partitions for the running max and each one's weight exp2(m_p - m) (-1 for an
// empty partition, whose accumulator was never written), kept in `scratch` (the kernel's shared
// memory, free by then: THREADS_N / 32 · num_partitions floats), then the head's columns, each the
// weighted sum in partition order times 1 / Σ weight · l_p. The sink, with WITH_SINKS, joins the
// denominator here, once: the partitions' sums leave it out. counters: CudaDevice.arrivalCounters,
// one per (decode, kv head) of the grid.
template <int GROUP_HEADS, int HEAD_D, int THREADS_N, bool WITH_SINKS>
__device__ __forceinline__ void merge_partitions_if_last(bf16* out, const float* part_acc, const float* part_ml, long long head0, int num_partitions,
                                                         int token, int num_heads, int kvh, const bf16* sinks, unsigned int* counters, float* scratch) {
  if (!last_to_arrive(counters + (long long)blockIdx.y * gridDim.x + blockIdx.x, num_partitions)) return;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  float* weight = scratch + warp * num_partitions;
  for (int h = warp; h < GROUP_HEADS; h += THREADS_N / 32) {
    const long long row0 = (head0 + h) * num_partitions;
    float m = NEG_INF;
    for (int p = lane; p < num_partitions; p += 32)
      if (load_from_l2(part_ml + (row0 + p) * 2 + 1) > 0.f) m = fmaxf(m, load_from_l2(part_ml + (row0 + p) * 2));
    m = warp_max(m);
    float l = 0.f;
    for (int p = lane; p < num_partitions; p += 32) {
      const float lp = load_from_l2(part_ml + (row0 + p) * 2 + 1);
      weight[p] = lp > 0.f ? fast_exp2(load_from_l2(part_ml + (row0 + p) * 2) - m) : -1.f;
      if (lp > 0.f) l += weight[p] * lp;
    }
    l = warp_sum(l);
    __syncwarp();
    const float inv = WITH_SINKS ? sink_normalizer(m, l, bf16_to_f32(sinks[kvh * GROUP_HEADS + h]) * LOG2E) : l > 0.f ? 1.f / l : 0.f;
    for (int c = lane; c < HEAD_D; c += 32) {
      float o = 0.f;
      for (int p = 0; p < num_partitions; p++)
        if (weight[p] >= 0.f) o += weight[p] * load_from_l2(part_acc + (row0 + p) * HEAD_D + c);
      out[(long long)token * num_heads * HEAD_D + (kvh * GROUP_HEADS + h) * HEAD_D + c] = f32_to_bf16(o * inv);
    }
    __syncwarp();  // every lane has read the weights before the next head's overwrite them
  }
}
