// Hopper (sm_90a) building blocks: warpgroup MMAs (wgmma.mma_async) on bf16 operands in shared
// memory laid out with the 128-byte swizzle, the matrix descriptors that name them, mbarriers and
// register reallocation. References are to the PTX ISA manual (8.x), by section title:
// - "Asynchronous Warpgroup Level Matrix Shared Memory Layout": operands are made of core matrices
//   of 8 rows x 16 bytes; with the 128-byte swizzle a swizzle atom is 8 rows x 128 bytes (1024
//   bytes, 1024-aligned) in which 16-byte chunk c of row r sits at chunk position c ^ (r % 8).
//   K-major: the leading byte offset is unused, the stride byte offset steps from one 8-row group
//   to the next (1024 for dense 128-byte rows), and a k-step inside the 128-byte row moves the start
//   address by its byte offset (the hardware applies the XOR to the final address). MN-major: the
//   leading byte offset steps from one 64-element (128-byte) slice of MN to the next, the stride
//   byte offset from one 8-row group of K to the next.
// - "Matrix Descriptor Format": bits 0-13 start address >> 4, 16-29 leading byte offset >> 4, 32-45
//   stride byte offset >> 4, 49-51 base offset (0: atoms 1024-aligned), 62-63 swizzle (1 = 128B).
// - "Register Fragments and Shared Memory Matrix Layouts" (wgmma .m64nNk16): warp w of the
//   warpgroup holds rows 16w .. 16w + 15 of A and D, each warp's share laid out as mma.m16n8k16's
//   A and C fragments (D: per 8 columns n, d[4n], d[4n+1] at row g, columns 8n + 2t, +1 and
//   d[4n+2], d[4n+3] at row g + 8, with g = lane / 4, t = lane % 4).
// - wgmma.fence / wgmma.commit_group / wgmma.wait_group; mbarrier; cp.async.mbarrier.arrive; setmaxnreg.
// - "Tensor Copy" (cp.async.bulk.tensor) and mbarrier's expect-tx / complete-tx: TMA loads.
// Only the sm_90a target has wgmma and setmaxnreg: include this from code compiled for it.
#pragma once
#include "mma.cuh"

typedef unsigned long long u64;

// Byte offset of 16-byte chunk `chunk` (0-7) of row `row` inside a panel of 128-byte rows with the
// 128-byte swizzle (the panel 1024-byte aligned): what TMA's SWIZZLE_128B writes and wgmma reads.
__device__ __forceinline__ unsigned int swizzle128(int row, int chunk) {
  return (unsigned int)(row * 128 + ((chunk ^ (row & 7)) << 4));
}

// A shared-memory matrix descriptor with the 128-byte swizzle (9.7.15.5.1.1). `addr` is a shared
// address; leading/stride byte offsets as the layout in use defines them (see the callers).
__device__ __forceinline__ u64 wgmma_desc(unsigned int addr, unsigned int leading_bytes, unsigned int stride_bytes) {
  return (u64)((addr & 0x3FFFF) >> 4) | ((u64)((leading_bytes >> 4) & 0x3FFF) << 16) |
         ((u64)((stride_bytes >> 4) & 0x3FFF) << 32) | (1ull << 62);
}

// The descriptor of the operand `bytes` (a multiple of 16) further into shared memory: the start
// address is the low field, so a 32-bit add moves it (no carry out of its 14 bits: shared memory
// is under 256 KB). Cheaper than a fresh descriptor before each MMA.
__device__ __forceinline__ u64 wgmma_desc_advance(u64 desc, unsigned int bytes) {
  return (desc & 0xFFFFFFFF00000000ull) | (unsigned int)((unsigned int)desc + (bytes >> 4));
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory"); }

// Pins registers an in-flight wgmma reads or writes at this point of the program: the compiler
// sees a use and a new definition, so it neither moves their ordinary uses across the wait before
// it nor reuses them early (the async MMA is opaque to it).
template <int N>
__device__ __forceinline__ void pin_registers(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; i++) asm volatile("" : "+f"(r[i])::"memory");
}
template <int N>
__device__ __forceinline__ void pin_registers(unsigned int (&r)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; i++) asm volatile("" : "+r"(r[i][0]), "+r"(r[i][1]), "+r"(r[i][2]), "+r"(r[i][3])::"memory");
}

#define WGMMA_ACC8(i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), "+f"(d[i + 7])
#define WGMMA_ACC32 WGMMA_ACC8(0), WGMMA_ACC8(8), WGMMA_ACC8(16), WGMMA_ACC8(24)
#define WGMMA_ACC64 WGMMA_ACC32, WGMMA_ACC8(32), WGMMA_ACC8(40), WGMMA_ACC8(48), WGMMA_ACC8(56)
#define WGMMA_ACC128 WGMMA_ACC64, WGMMA_ACC8(64), WGMMA_ACC8(72), WGMMA_ACC8(80), WGMMA_ACC8(88), WGMMA_ACC8(96), WGMMA_ACC8(104), WGMMA_ACC8(112), WGMMA_ACC8(120)
#define WGMMA_D32 "{" \
  "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define WGMMA_D64 "{" \
  "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
  "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
  "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"
#define WGMMA_D128 "{" \
  "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
  "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
  "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, " \
  "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, " \
  "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, " \
  "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, " \
  "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}"

// d (64 × N f32, N / 2 per thread) = [d +] A (64 × 16) · B (16 × N), both bf16 in shared memory and
// K-major (each row's 16 k-values contiguous): imm-trans-a = imm-trans-b = 0. scale_d 0 ignores d.
template <int N>
__device__ __forceinline__ void wgmma_ss(float (&d)[N / 2], u64 a, u64 b, int scale_d);

// d = [d +] A · B with A (64 × 16 bf16) from registers (four words per thread, mma.m16n8k16's A
// fragment in each warp) and B in shared memory MN-major (each k-row's N values contiguous):
// imm-trans-b = 1.
template <int N>
__device__ __forceinline__ void wgmma_rs_mn(float (&d)[N / 2], const unsigned int (&a)[4], u64 b, int scale_d);

#define WGMMA_SS(N, REGS, ACC, A, B, S)                                                                   \
  template <>                                                                                             \
  __device__ __forceinline__ void wgmma_ss<N>(float (&d)[N / 2], u64 a, u64 b, int scale_d) {             \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " S ", 0;\n"                                          \
                 "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32.bf16.bf16 " REGS ", " A ", " B           \
                 ", p, 1, 1, 0, 0;\n}\n"                                                                  \
                 : ACC                                                                                    \
                 : "l"(a), "l"(b), "r"(scale_d));                                                         \
  }
#define WGMMA_RS_MN(N, REGS, ACC, A, B, S)                                                                \
  template <>                                                                                             \
  __device__ __forceinline__ void wgmma_rs_mn<N>(float (&d)[N / 2], const unsigned int (&a)[4], u64 b, int scale_d) { \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " S ", 0;\n"                                          \
                 "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32.bf16.bf16 " REGS ", " A ", " B           \
                 ", p, 1, 1, 1;\n}\n"                                                                     \
                 : ACC                                                                                    \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(scale_d));                     \
  }
WGMMA_SS(64, WGMMA_D32, WGMMA_ACC32, "%32", "%33", "%34")
WGMMA_SS(128, WGMMA_D64, WGMMA_ACC64, "%64", "%65", "%66")
WGMMA_RS_MN(64, WGMMA_D32, WGMMA_ACC32, "{%32, %33, %34, %35}", "%36", "%37")
WGMMA_RS_MN(128, WGMMA_D64, WGMMA_ACC64, "{%64, %65, %66, %67}", "%68", "%69")
WGMMA_RS_MN(256, WGMMA_D128, WGMMA_ACC128, "{%128, %129, %130, %131}", "%132", "%133")
#undef WGMMA_SS
#undef WGMMA_RS_MN

// mbarriers in shared memory (9.7.13.15), addressed by their shared address.
__device__ __forceinline__ void mbarrier_init(unsigned int bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
// Makes the initializations visible to the other threads and to the async proxy (before a block barrier).
__device__ __forceinline__ void mbarrier_init_fence() { asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"); }
__device__ __forceinline__ void mbarrier_arrive(unsigned int bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
// Arrives once this thread's earlier cp.async copies have landed; noinc: the barrier's expected
// count already includes this arrival.
__device__ __forceinline__ void mbarrier_arrive_on_copies(unsigned int bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}
// Waits until the phase of parity `parity` has completed.
__device__ __forceinline__ void mbarrier_wait(unsigned int bar, unsigned int parity) {
  asm volatile(
      "{\n.reg .pred done;\nWAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT;\n}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}

// Sets the phase to also wait for `bytes` more of asynchronous copies (TMA) and arrives, in one.
__device__ __forceinline__ void mbarrier_arrive_expect_tx(unsigned int bar, unsigned int bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}

// A tensor map (cuda.h's CUtensorMap, written by cuTensorMapEncodeTiled on the host: tensor-maps.ts),
// passed by value as a `const __grid_constant__` kernel parameter so that TMA can read it in place.
struct alignas(64) TensorMap {
  unsigned long long opaque[16];
};

// TMA: the box of `map` at coordinates (c0, c1, c2), innermost first, into shared memory at `dst`
// in the map's swizzled layout; its bytes complete-tx on `bar`.
__device__ __forceinline__ void tma_load_3d(unsigned int dst, const TensorMap* map, int c0, int c1, int c2, unsigned int bar) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];\n" ::"r"(dst),
      "l"(reinterpret_cast<unsigned long long>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(bar)
      : "memory");
}

// Orders this thread's generic-proxy shared-memory accesses (ordinary stores, cp.async writes it
// has waited for) before its later async-proxy ones (wgmma operand reads).
__device__ __forceinline__ void fence_async_shared() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// Register reallocation between warpgroups (9.7.19.6): every warp of the warpgroup runs it.
template <int N>
__device__ __forceinline__ void registers_release() { asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N)); }
template <int N>
__device__ __forceinline__ void registers_claim() { asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N)); }
