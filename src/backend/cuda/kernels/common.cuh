// Shared device helpers. NVRTC compiles these kernels with no system headers, so bf16 is handled
// as raw 16-bit patterns with PTX conversions instead of <cuda_bf16.h>.
#pragma once
#include "kv-tile-rows.cuh"

typedef unsigned short bf16;

#define NEG_INF __int_as_float(0xff800000)
#define FULL_MASK 0xffffffffu

// The first statement of every kernel (kernel-prologue.ts checks it; a kernel without it is never
// launched with PDL). With programmatic dependent launch (KEEL_PDL=1 on compute capability >= 9.0,
// docs/cuda-backend.md) a kernel's blocks may start while the kernel before it in the stream still
// runs, so before anything else:
//  - griddepcontrol.wait (cudaGridDependencySynchronize) blocks until the kernel before has
//    completed and its writes are visible. That kernel waited the same way for the one before it,
//    so all earlier work is done: nothing this kernel reads is still being written (RAW) and
//    nothing it writes is still being read (WAR). It returns at once when the launch had no
//    programmatic dependency (a plain launch, or the op before was a copy or memset, which the
//    stream orders fully).
//  - griddepcontrol.launch_dependents then lets the next kernel launch: its blocks are scheduled
//    once every block of this grid has issued it or exited, so they only take what this grid's
//    last wave leaves free, and they wait at their own prologue until this grid has completed.
//    No kernel here waits on a later kernel: the only spin-wait, moe_decode_kernel's grid barrier,
//    waits on blocks of its own grid (moe-decode.cu says why PDL cannot starve it).
// Both instructions exist from sm_90 on; the macro is empty below, where PDL is never used.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define PDL_PROLOGUE()                                       \
  do {                                                       \
    asm volatile("griddepcontrol.wait;" ::: "memory");       \
    asm volatile("griddepcontrol.launch_dependents;" :::);   \
  } while (0)
#else
#define PDL_PROLOGUE() \
  do {                 \
  } while (0)
#endif

// Pulls the 128-byte line holding p into L2 (normal eviction priority).
__device__ __forceinline__ void prefetch_l2(const void* p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }

// The only statements a kernel may put before PDL_PROLOGUE() (kernel-prologue.ts allows these
// alone): a call that issues L2 prefetches (prefetch_l2) of what no kernel of a step writes, its
// weights, computing their addresses from its arguments and indices only. A prefetch hands the
// kernel no value, and L2 is where every device write lands, so it cannot read anything stale
// whatever the kernel before still writes; it only lets the kernel's first weight lines stream in
// while that kernel finishes, where otherwise its loads would start after the wait.
#define PDL_PREFETCH(call) call

__device__ __forceinline__ float bf16_to_f32(bf16 h) { return __uint_as_float(((unsigned int)h) << 16); }

// Round to nearest even, as PyTorch's .to(torch.bfloat16).
__device__ __forceinline__ bf16 f32_to_bf16(float f) {
  unsigned short r;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(f));
  return r;
}

// Two floats -> one 32-bit word holding bf16(lo) in the low half and bf16(hi) in the high half.
__device__ __forceinline__ unsigned int pack_bf16x2(float lo, float hi) {
  unsigned int r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

__device__ __forceinline__ float bf16x2_lo(unsigned int w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float bf16x2_hi(unsigned int w) { return __uint_as_float(w & 0xffff0000u); }

__device__ __forceinline__ float f16_to_f32(unsigned short h) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
}

// 2^x; ex2.approx maps -inf to +0, which masked scores rely on.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// tanh with the SFU's approximation (max relative error 2^-11, far below bf16's 2^-8): soft-capped
// attention takes one per score, where the precise tanhf would cost several instructions.
__device__ __forceinline__ float fast_tanh(float x) {
  float y;
  asm("tanh.approx.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

#define LOG2E 1.4426950408889634f

// Attention with a learned sink (gpt-oss): the sink's logit (log2 domain) joins the softmax's
// denominator only. An accumulator of running max m and sum l (relative to m) is multiplied by
// this to finish the softmax: 1 / (l + 2^(sink - m)), computed against max(m, sink) so that no
// exponential overflows. m = -inf (nothing visible) gives 0.
__device__ __forceinline__ float sink_normalizer(float m, float l, float sink) {
  const float top = fmaxf(m, sink);
  const float c = fast_exp2(m - top);
  return c / (l * c + fast_exp2(sink - top));
}

// Eight bf16 values (one 16-byte access) unpacked to / packed from floats.
__device__ __forceinline__ void unpack8(const uint4 v, float* f) {
  f[0] = bf16x2_lo(v.x); f[1] = bf16x2_hi(v.x);
  f[2] = bf16x2_lo(v.y); f[3] = bf16x2_hi(v.y);
  f[4] = bf16x2_lo(v.z); f[5] = bf16x2_hi(v.z);
  f[6] = bf16x2_lo(v.w); f[7] = bf16x2_hi(v.w);
}

__device__ __forceinline__ uint4 pack8(const float* f) {
  uint4 v;
  v.x = pack_bf16x2(f[0], f[1]);
  v.y = pack_bf16x2(f[2], f[3]);
  v.z = pack_bf16x2(f[4], f[5]);
  v.w = pack_bf16x2(f[6], f[7]);
  return v;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
  return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, at most 1024); every thread gets the total.
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float partial[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // partial[] may still be read by a previous call
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < warps ? partial[lane] : 0.f;
  return warp_sum(v);
}

// Max over the whole block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
__device__ __forceinline__ float block_max(float v) {
  __shared__ float partial[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();  // partial[] may still be read by a previous call
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < warps ? partial[lane] : NEG_INF;
  return warp_max(v);
}

// A 16-byte load of read-only data that is read once (weights): not kept in L1.
__device__ __forceinline__ uint4 load_streaming(const uint4* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// What another CTA of this kernel wrote, read from L2 (this SM's L1 may hold a stale line).
__device__ __forceinline__ float load_from_l2(const float* p) {
  float v;
  asm volatile("ld.global.cg.f32 %0, [%1];" : "=f"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ float2 load_from_l2(const float2* p) {
  float2 v;
  asm volatile("ld.global.cg.v2.f32 {%0, %1}, [%2];" : "=f"(v.x), "=f"(v.y) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ float4 load_from_l2(const float4* p) {
  float4 v;
  asm volatile("ld.global.cg.v4.f32 {%0, %1, %2, %3}, [%4];" : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w) : "l"(p) : "memory");
  return v;
}

// Whether this CTA is the last of the `count` CTAs sharing `counter` to get here, so that it can
// finish their joint result (a merge, a split-K sum) without a kernel of its own. Every thread of
// the CTA calls it once, after writing what the last one will read: the fence and barrier put
// those writes before thread 0's count, and the last CTA, fenced after the count, sees every CTA's.
// The last one sets the counter back to zero, as every launch finds it: counters are
// CudaDevice.arrivalCounters, zeroed once, and only kernels on the device's one compute stream
// use them, each finished before the next reads them (stream order; with PDL, griddepcontrol.wait).
__device__ __forceinline__ bool last_to_arrive(unsigned int* counter, unsigned int count) {
  __threadfence();
  __syncthreads();
  const bool last = __syncthreads_or(threadIdx.x == 0 && atomicAdd(counter, 1u) == count - 1);
  if (last) {
    if (threadIdx.x == 0) *counter = 0u;
    __threadfence();
  }
  return last;
}

// 16-byte global -> shared copy that bypasses L1; src_bytes 0 writes zeros (rows past the end).
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, int src_bytes) {
  const unsigned int s = (unsigned int)__cvta_generic_to_shared(smem);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(src_bytes));
}
// cp.async of 8 or 4 bytes (.ca: the sizes under 16 bytes); src_bytes 0 zero-fills.
__device__ __forceinline__ void cp_async8(void* smem, const void* gmem, int src_bytes) {
  const unsigned int s = (unsigned int)__cvta_generic_to_shared(smem);
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(s), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async4(void* smem, const void* gmem, int src_bytes) {
  const unsigned int s = (unsigned int)__cvta_generic_to_shared(smem);
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(s), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// Slot of key `pos` of a sequence: its block from the block table, then the offset inside it.
// The table row of embedding row r: id = sampled[sources[r]] where sources[r] >= 0 (a token the
// previous step sampled on the device), else tokens[r], less first_row (a vocab-parallel shard's
// first id); -1 for an id outside the table's `vocab` rows (another shard's, or a row that had no
// finite logit), which gives a zero row rather than a read out of bounds.
__device__ __forceinline__ int embedding_row(int r, const int* tokens, const int* sources, const int* sampled, int first_row, int vocab) {
  const int source = sources[r];
  const int token = source >= 0 ? sampled[source] : tokens[r];
  const int id = token < 0 ? -1 : token - first_row;
  return id < 0 || id >= vocab ? -1 : id;
}

__device__ __forceinline__ long long kv_slot(const int* block_table, int pos, int block_size) {
  return (long long)block_table[pos / block_size] * block_size + pos % block_size;
}

// The cache slot this lane looks up for the tile at k0 (KvTileRows::lane_row, kv-tile-rows.cuh),
// -1 past `end` or for no row. Every lane of the warp calls it; a pool's slots fit an int
// (checkCudaKvLayout refuses larger pools).
template <typename Rows>
__device__ __forceinline__ int lane_kv_slot(const int* block_table, int k0, int end, int block_size) {
  const int r = Rows::lane_row(threadIdx.x, threadIdx.x & 31);
  return r >= 0 && k0 + r < end ? (int)kv_slot(block_table, k0 + r, block_size) : -1;
}
// The slot of the row this thread copies in round `round`, from the lane that looked it up.
template <typename Rows>
__device__ __forceinline__ int round_kv_slot(int lane_slot, int round) {
  return __shfl_sync(FULL_MASK, lane_slot, Rows::source_lane(threadIdx.x, round));
}
// copy(c, slot) for each chunk c of the tile at k0 that this thread copies (chunk c of row
// c / CHUNKS), slot its row's cache slot or -1 at or past `end`: by the lanes' shuffled slots where
// the tile's shape allows, else looked up per chunk. Every thread of the block calls it.
template <int TILE_ROWS, int CHUNKS, int THREADS, typename Copy>
__device__ __forceinline__ void for_each_tile_chunk(const int* block_table, int k0, int end, int block_size, Copy copy) {
  using Rows = KvTileRows<TILE_ROWS, CHUNKS, THREADS>;
  if constexpr (Rows::BY_LANE) {
    const int lane_slot = lane_kv_slot<Rows>(block_table, k0, end, block_size);
#pragma unroll 2
    for (int i = 0; i < Rows::ROUNDS; i++) copy(threadIdx.x + i * THREADS, round_kv_slot<Rows>(lane_slot, i));
  } else {
    for (int c = threadIdx.x; c < TILE_ROWS * CHUNKS; c += THREADS) {
      const int pos = k0 + c / CHUNKS;
      copy(c, pos < end ? kv_slot(block_table, pos, block_size) : -1);
    }
  }
}

// Queues (cp.async, one commit group) the keys and values of positions k0 .. k0 + TILE_ROWS - 1 of kv
// head `kvh` from the paged pools into shared rows `row_stride` elements apart, CHUNKS 16-byte chunks
// each (8 bf16, or 16 codes of an 8-bit cache), shared by THREADS threads; positions at or past
// `end` are zero-filled. Whatever the thread queued before (an 8-bit cache's row scales) joins the group.
template <int TILE_ROWS, int CHUNKS, int THREADS, typename T>
__device__ __forceinline__ void stage_kv_tile(T* dk, T* dv, const T* k_pool, const T* v_pool, const int* block_table, int k0, int end,
                                              int block_size, int num_kv_heads, int kvh, int row_stride) {
  constexpr int PER = 16 / sizeof(T);
  auto copy = [&](int c, long long slot) {
    const int r = c / CHUNKS, ch = c - r * CHUNKS;
    const long long src = slot >= 0 ? (slot * num_kv_heads + kvh) * (CHUNKS * PER) + ch * PER : 0;
    cp_async16(dk + r * row_stride + ch * PER, k_pool + src, slot >= 0 ? 16 : 0);
    cp_async16(dv + r * row_stride + ch * PER, v_pool + src, slot >= 0 ? 16 : 0);
  };
  for_each_tile_chunk<TILE_ROWS, CHUNKS, THREADS>(block_table, k0, end, block_size, copy);
  cp_async_commit();
}

// StreamingLLM: element d of an unrotated query head rotated by table row `row` (rotate_half over
// the leading rotary_dim dims; the rest pass through), rounded to bf16 as rope_cache_write_kernel
// rounds the heads it rotates, so a query scores alike whichever kernel rotated it.
__device__ __forceinline__ float rotated_query_element(const bf16* head, int d, int rotary_dim, const float* cos_table,
                                                       const float* sin_table, int row) {
  if (d >= rotary_dim) return bf16_to_f32(head[d]);
  const int half = rotary_dim / 2;
  const int i = d < half ? d : d - half;
  const float x1 = bf16_to_f32(head[i]), x2 = bf16_to_f32(head[i + half]);
  const long long at = (long long)row * half + i;
  const float c = cos_table[at], s = sin_table[at];
  return bf16_to_f32(f32_to_bf16(d < half ? x1 * c - x2 * s : x2 * c + x1 * s));
}

// Quantized KV caches (step/kv-cache-layout.ts; backend/cpu/ops/kv-codes.ts is the CPU twin).
// Kernels that read or write the cache are compiled with KV_DTYPE: 0 bf16, 1 fp8 e4m3 (one scale per
// pool), 2 int8 (a float32 scale per (slot, head)), 3 int4 (two codes a byte, value 2i in the low
// nibble of byte i, and a float32 (scale, minimum) pair per (slot, head): x = code · scale + minimum).

// The e4m3 code nearest x (ties to even), saturating at ±448; NaN gives 0x7f. Bit arithmetic on
// the float32, so it runs on every architecture (the cvt to e4m3 needs sm_89) and equals the
// CPU's floatToFp8E4m3 code for code.
__device__ __forceinline__ unsigned int f32_to_e4m3(float x) {
  const unsigned int bits = __float_as_uint(x);
  const unsigned int sign = (bits >> 24) & 0x80u;
  const float a = fabsf(x);
  if (a != a) return 0x7fu;
  if (a >= 448.f) return sign | 0x7eu;
  // Below 2^-6 the codes are subnormal steps of 2^-9; 8 steps is the smallest normal code.
  if (a < 0.015625f) return sign | (unsigned int)__float2int_rn(a * 512.f);
  // Round the 23-bit mantissa to 3 bits, to even; a carry moves into the exponent.
  const unsigned int magnitude = bits & 0x7fffffffu;
  const unsigned int rounded = magnitude + 0x7ffffu + ((magnitude >> 20) & 1u);
  const unsigned int code = ((((rounded >> 23) - 127u + 7u)) << 3) | ((rounded >> 20) & 7u);
  return sign | min(code, 0x7eu);
}

// The scale of a head quantized on its own (KV 1 fp8 e4m3, 2 int8) from its max|x|: max|x| / 448
// or / 127, 1 for a head of zeros (kv-codes.ts storeSlot).
template <int KV>
__device__ __forceinline__ float kv_head_scale(float amax) {
  return amax == 0.f ? 1.f : amax / (KV == 1 ? 448.f : 127.f);
}

// x's 8-bit code at scale s: e4m3(x / s) or int8 round(x / s), ties to even, the quotient a float32
// division as the CPU twin computes it.
template <int KV>
__device__ __forceinline__ unsigned char kv_encode(float x, float s) {
  return KV == 1 ? (unsigned char)f32_to_e4m3(x / s) : (unsigned char)(signed char)max(-127, min(127, __float2int_rn(x / s)));
}

// An e4m3 code's value / 2^8, exactly: its bits moved into a half's (normal and subnormal alike).
__device__ __forceinline__ float e4m3_over_256(unsigned int b) {
  return f16_to_f32((unsigned short)(((b & 0x7fu) << 7) | ((b & 0x80u) << 8)));
}

// What one 8-bit code stands for at scale 1, exactly: the e4m3 value, or int8's integer. Times the
// scale (one rounding) it is the float32 the CPU keeps.
template <int KV>
__device__ __forceinline__ float code_value(unsigned int b) {
  return KV == 1 ? e4m3_over_256(b) * 256.f : (float)(signed char)b;
}

// Eight 8-bit codes (one 8-byte access) as bf16 values code · scale, packed for shared memory.
template <int KV>
__device__ __forceinline__ uint4 dequantize8(const uint2 codes, float scale) {
  float f[8];
#pragma unroll
  for (int i = 0; i < 8; i++) f[i] = code_value<KV>(((i < 4 ? codes.x : codes.y) >> (8 * (i & 3))) & 0xffu) * scale;
  return pack8(f);
}

// int4's scale from a head's extremes: (max − min) / 15, 1 for a head of equal values.
__device__ __forceinline__ float int4_scale(float lo, float hi) {
  return hi == lo ? 1.f : __fdiv_rn(__fsub_rn(hi, lo), 15.f);
}

// x's int4 code at (scale s, minimum lo): round((x − lo) / s), ties to even, within 0..15; the
// difference and the quotient float32 operations, as the CPU twin rounds them.
__device__ __forceinline__ unsigned int int4_encode(float x, float lo, float s) {
  return (unsigned int)max(0, min(15, __float2int_rn(__fdiv_rn(__fsub_rn(x, lo), s))));
}

// Eight int4 codes (one 4-byte access) as bf16 values code · scale + minimum, rounded once (fmaf,
// as the CPU twin's float64 sum of an exact product), packed for shared memory.
__device__ __forceinline__ uint4 dequantize_int4x8(unsigned int codes, float scale, float lo) {
  float f[8];
#pragma unroll
  for (int i = 0; i < 8; i++) f[i] = __fmaf_rn((float)((codes >> (4 * i)) & 0xfu), scale, lo);
  return pack8(f);
}

// A landed code tile (stage_kv_code_bytes, codes at the start of `dk` and `dv`) rewritten in place as
// bf16 rows `row_stride` apart of code · scale (int4: code · scale + minimum, `sk`/`sv` holding a
// row's pair), as the bf16 path stages them: every thread reads its codes, the block meets a
// barrier, then each writes its rows (and zeros in the columns CHUNKS * 8 .. PAD_END that the mma's
// k-steps read) and the block meets another. The loads thus overlap the previous tile's math as
// cp.async does for bf16; only the conversion does not.
template <int KV, int TILE_ROWS, int CHUNKS, int THREADS, int PAD_END>
__device__ __forceinline__ void bf16_rows_from_codes(bf16* dk, bf16* dv, const float* sk, const float* sv, float k_scale, float v_scale,
                                                     int row_stride) {
  constexpr int PER = (TILE_ROWS * CHUNKS + THREADS - 1) / THREADS;
  uint2 k[PER], v[PER];  // a chunk's 8 codes: 8 bytes, or int4's 4 in .x
#pragma unroll
  for (int i = 0; i < PER; i++) {
    const int c = threadIdx.x + i * THREADS;
    if (c < TILE_ROWS * CHUNKS) {
      if (KV == 3) {
        k[i].x = reinterpret_cast<const unsigned int*>(dk)[c];
        v[i].x = reinterpret_cast<const unsigned int*>(dv)[c];
      } else {
        k[i] = reinterpret_cast<const uint2*>(dk)[c];
        v[i] = reinterpret_cast<const uint2*>(dv)[c];
      }
    }
  }
  __syncthreads();
#pragma unroll
  for (int i = 0; i < PER; i++) {
    const int c = threadIdx.x + i * THREADS;
    if (c < TILE_ROWS * CHUNKS) {
      const int r = c / CHUNKS, ch = c - r * CHUNKS;
      if (KV == 3) {
        *reinterpret_cast<uint4*>(dk + r * row_stride + ch * 8) = dequantize_int4x8(k[i].x, sk[2 * r], sk[2 * r + 1]);
        *reinterpret_cast<uint4*>(dv + r * row_stride + ch * 8) = dequantize_int4x8(v[i].x, sv[2 * r], sv[2 * r + 1]);
      } else {
        *reinterpret_cast<uint4*>(dk + r * row_stride + ch * 8) = dequantize8<KV>(k[i], KV == 2 ? sk[r] : k_scale);
        *reinterpret_cast<uint4*>(dv + r * row_stride + ch * 8) = dequantize8<KV>(v[i], KV == 2 ? sv[r] : v_scale);
      }
    }
  }
  if (PAD_END > CHUNKS * 8) {
    for (int r = threadIdx.x; r < TILE_ROWS; r += THREADS)
#pragma unroll
      for (int c = CHUNKS * 8; c < PAD_END; c += 8) {
        *reinterpret_cast<uint4*>(dk + r * row_stride + c) = make_uint4(0, 0, 0, 0);
        *reinterpret_cast<uint4*>(dv + r * row_stride + c) = make_uint4(0, 0, 0, 0);
      }
  }
  __syncthreads();
}

// A quantized cache's tile in two steps, so that its loads overlap the previous tile's math as the
// bf16 path's cp.async staging does: stage_kv_code_bytes copies the codes of kv head `kvh` (rows of
// CHUNKS chunks of 8 codes, `ck`/`cv`: kv_code_chunk bytes each) and with KV 2 each row's scale,
// with KV 3 its (scale, minimum) pair (`sk`/`sv`, kv_row_scales floats a row) asynchronously, one
// commit group; positions at or past `end` are zero-filled (code 0 is 0 in the 8-bit formats, and
// an int4 row of zero scale and minimum is 0). Once the group has landed and the block has met a
// barrier, unit_kv_tile writes them to the shared f16 rows that the attention math reads.
__host__ __device__ constexpr int kv_code_chunk(int kv) { return kv == 3 ? 4 : 8; }
__host__ __device__ constexpr int kv_row_scales(int kv) { return kv == 3 ? 2 : kv == 2 ? 1 : 0; }
template <int KV, int TILE_ROWS, int CHUNKS, int THREADS>
__device__ __forceinline__ void stage_kv_code_bytes(unsigned char* ck, unsigned char* cv, float* sk, float* sv, const unsigned char* k_pool,
                                                    const unsigned char* v_pool, const float* k_scales, const float* v_scales,
                                                    const int* block_table, int k0, int end, int block_size, int num_kv_heads, int kvh) {
  constexpr int BYTES = kv_code_chunk(KV);
  constexpr int SCALES = kv_row_scales(KV);
  auto copy = [&](int c, long long slot) {
    const int r = c / CHUNKS, ch = c - r * CHUNKS;
    const bool valid = slot >= 0;
    const long long head = valid ? slot * num_kv_heads + kvh : 0;
    const long long at = head * (CHUNKS * BYTES) + ch * BYTES;
    if (BYTES == 4) {
      cp_async4(ck + r * CHUNKS * BYTES + ch * BYTES, k_pool + at, valid ? 4 : 0);
      cp_async4(cv + r * CHUNKS * BYTES + ch * BYTES, v_pool + at, valid ? 4 : 0);
    } else {
      cp_async8(ck + r * CHUNKS * BYTES + ch * BYTES, k_pool + at, valid ? 8 : 0);
      cp_async8(cv + r * CHUNKS * BYTES + ch * BYTES, v_pool + at, valid ? 8 : 0);
    }
    if (SCALES == 1 && ch == 0) {
      cp_async4(sk + r, k_scales + head, valid ? 4 : 0);
      cp_async4(sv + r, v_scales + head, valid ? 4 : 0);
    } else if (SCALES == 2 && ch == 0) {
      cp_async8(sk + 2 * r, k_scales + 2 * head, valid ? 8 : 0);
      cp_async8(sv + 2 * r, v_scales + 2 * head, valid ? 8 : 0);
    }
  };
  for_each_tile_chunk<TILE_ROWS, CHUNKS, THREADS>(block_table, k0, end, block_size, copy);
  cp_async_commit();
}

// Two 8-bit codes of `w` (the bytes `sel` names, as __byte_perm selects them: 0x4140 bytes 0 and 1,
// 0x4342 bytes 2 and 3, 0x4240 bytes 0 and 2, 0x4341 bytes 1 and 3) as an f16 pair holding each
// code's unit value exactly, a few integer ops a pair: KV 1 an e4m3 code's bits moved into a half's,
// which is its value / 256 (e4m3_over_256); KV 2 int8's integer, 1024 + 128 + code made by bits and
// the 1,152 taken off in half arithmetic (exact: every integer up to 2,048 is an f16).
template <int KV>
__device__ __forceinline__ unsigned int codes_to_f16x2(unsigned int w, unsigned int sel) {
  const unsigned int t = __byte_perm(w, 0u, sel);  // the first code in bits 0-7, the second in bits 16-23
  if (KV == 1) return ((t & 0x007f007fu) << 7) | ((t & 0x00800080u) << 8);
  const unsigned int biased = (t ^ 0x00800080u) | 0x64006400u;
  unsigned int out;
  asm("sub.rn.f16x2 %0, %1, %2;" : "=r"(out) : "r"(biased), "r"(0x64806480u));
  return out;
}
constexpr unsigned int CODES_01 = 0x4140u, CODES_23 = 0x4342u, CODES_02 = 0x4240u, CODES_13 = 0x4341u;

// Eight f16 values (one 16-byte access) unpacked to floats.
__device__ __forceinline__ void unpack8_f16(const uint4 v, float* f) {
  const unsigned int w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; i++) {
    f[2 * i] = f16_to_f32((unsigned short)(w[i] & 0xffffu));
    f[2 * i + 1] = f16_to_f32((unsigned short)(w[i] >> 16));
  }
}

// Codes j (low nibble) and j + 1 of an int4 byte as an f16 pair of their values 0..15, exactly:
// 1024 + code made by bits in each half, less 1024 in half arithmetic.
__device__ __forceinline__ unsigned int int4_byte_to_f16x2(unsigned int b) {
  const unsigned int biased = (b & 0xfu) | ((b & 0xf0u) << 12) | 0x64006400u;
  unsigned int out;
  asm("sub.rn.f16x2 %0, %1, %2;" : "=r"(out) : "r"(biased), "r"(0x64006400u));
  return out;
}

// Nibbles i and 4 + i of a 32-bit word of int4 codes (codes 0..7, code 2 b in byte b's low nibble)
// as an f16 pair of their values 0..15, exactly, as int4_byte_to_f16x2 makes them.
__device__ __forceinline__ unsigned int nibbles_to_f16x2(unsigned int w, int i) {
  const unsigned int biased = ((w >> (4 * i)) & 0x000f000fu) | 0x64006400u;
  unsigned int out;
  asm("sub.rn.f16x2 %0, %1, %2;" : "=r"(out) : "r"(biased), "r"(0x64006400u));
  return out;
}

// A landed code tile as f16 rows `row_stride` apart of unit values (codes_to_f16x2, or int4's codes
// 0..15): the scales (per tensor for fp8, with fp8's 256; per row for int8 and int4, with int4's
// minimum) are the attention's to apply, to the query and output or to each key's score and
// probability, not to every value.
template <int KV, int TILE_ROWS, int CHUNKS, int THREADS>
__device__ __forceinline__ void unit_kv_tile(unsigned short* dk, unsigned short* dv, const unsigned char* ck, const unsigned char* cv, int row_stride) {
  for (int c = threadIdx.x; c < TILE_ROWS * CHUNKS; c += THREADS) {
    const int r = c / CHUNKS, ch = c - r * CHUNKS;
    if (KV == 3) {
      const unsigned int k = *reinterpret_cast<const unsigned int*>(ck + r * CHUNKS * 4 + ch * 4);
      const unsigned int v = *reinterpret_cast<const unsigned int*>(cv + r * CHUNKS * 4 + ch * 4);
      *reinterpret_cast<uint4*>(dk + r * row_stride + ch * 8) =
          make_uint4(int4_byte_to_f16x2(k & 0xffu), int4_byte_to_f16x2((k >> 8) & 0xffu), int4_byte_to_f16x2((k >> 16) & 0xffu), int4_byte_to_f16x2(k >> 24));
      *reinterpret_cast<uint4*>(dv + r * row_stride + ch * 8) =
          make_uint4(int4_byte_to_f16x2(v & 0xffu), int4_byte_to_f16x2((v >> 8) & 0xffu), int4_byte_to_f16x2((v >> 16) & 0xffu), int4_byte_to_f16x2(v >> 24));
      continue;
    }
    const uint2 k = *reinterpret_cast<const uint2*>(ck + r * CHUNKS * 8 + ch * 8);
    const uint2 v = *reinterpret_cast<const uint2*>(cv + r * CHUNKS * 8 + ch * 8);
    *reinterpret_cast<uint4*>(dk + r * row_stride + ch * 8) =
        make_uint4(codes_to_f16x2<KV>(k.x, CODES_01), codes_to_f16x2<KV>(k.x, CODES_23), codes_to_f16x2<KV>(k.y, CODES_01), codes_to_f16x2<KV>(k.y, CODES_23));
    *reinterpret_cast<uint4*>(dv + r * row_stride + ch * 8) =
        make_uint4(codes_to_f16x2<KV>(v.x, CODES_01), codes_to_f16x2<KV>(v.x, CODES_23), codes_to_f16x2<KV>(v.y, CODES_01), codes_to_f16x2<KV>(v.y, CODES_23));
  }
}
