// Tensor-core fragments for bf16 mma.sync.m16n8k16 (sm_80+), loaded from shared memory with ldmatrix.
#pragma once
#include "common.cuh"

__device__ __forceinline__ unsigned int smem_addr(const void* p) {
  return (unsigned int)__cvta_generic_to_shared(p);
}

// Four 8x8 b16 matrices; lanes 8i..8i+7 give the row addresses of matrix i. Lane l receives
// (row l/4, cols 2(l%4), 2(l%4)+1) of each matrix.
__device__ __forceinline__ void ldmatrix_x4(unsigned int (&r)[4], const void* row_addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(row_addr)));
}

// Two 8x8 b16 matrices; lanes 8i..8i+7 give the row addresses of matrix i (lanes 16..31 are ignored).
__device__ __forceinline__ void ldmatrix_x2(unsigned int (&r)[2], const void* row_addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(smem_addr(row_addr)));
}

// As ldmatrix_x4 but each matrix transposed: lane l receives (rows 2(l%4), 2(l%4)+1, col l/4).
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned int (&r)[4], const void* row_addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(row_addr)));
}

// d (16x8 f32) += a (16x16 bf16, row-major fragment) * b (16x8 bf16, column fragment b0, b1).
__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const unsigned int (&a)[4], unsigned int b0,
                                               unsigned int b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Queues (cp.async) a tile of TileRows bf16 rows of TileChunks 16-byte chunks, k columns [k0, k0 + 8 TileChunks),
// into shared rows row_stride apart, shared by Threads threads: thread tid's i-th chunk is chunk
// tid + i Threads, from row src[i] (null: a row past the operand, zero-filled); columns past k are
// zero-filled. `any` is any valid address (what a zero-fill names).
template <int TileRows, int TileChunks, int Threads, int PerThread>
__device__ __forceinline__ void stage_bf16_rows(bf16* dst, const bf16* const (&src)[PerThread], int k0, int k, int row_stride, const bf16* any) {
#pragma unroll
  for (int i = 0; i < PerThread; i++) {
    const int c = threadIdx.x + i * Threads;
    if (c < TileRows * TileChunks) {
      const int r = c / TileChunks, kk = k0 + (c % TileChunks) * 8;
      const bool valid = src[i] != nullptr && kk < k;
      cp_async16(dst + r * row_stride + (c % TileChunks) * 8, valid ? src[i] + kk : any, valid ? 16 : 0);
    }
  }
}

// A warp's A fragments of k step kk (16 columns) for MTiles 16-row tiles starting at row 0 of sa.
template <int MTiles>
__device__ __forceinline__ void load_a_fragments(unsigned int (&af)[MTiles][4], const bf16* sa, int row_stride, int kk) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int mt = 0; mt < MTiles; mt++) ldmatrix_x4(af[mt], sa + (mt * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * row_stride + kk * 16 + (lane >> 4) * 8);
}

// acc[mt][nt] += A fragments · B rows (output columns) 8 nt .. 8 nt + 7 of sb, k step kk, for NTiles8
// 8-column tiles (NTiles8 even): the warp's share of one k step of a tensor-core tile.
template <int MTiles, int NTiles8>
__device__ __forceinline__ void mma_k_step(float (&acc)[MTiles][NTiles8][4], const unsigned int (&af)[MTiles][4], const bf16* sb, int row_stride, int kk) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int nn = 0; nn < NTiles8 / 2; nn++) {
    unsigned int bfr[4];
    ldmatrix_x4(bfr, sb + (nn * 16 + (lane & 7) + (lane >> 4) * 8) * row_stride + kk * 16 + ((lane >> 3) & 1) * 8);
#pragma unroll
    for (int mt = 0; mt < MTiles; mt++) {
      mma_bf16_16816(acc[mt][2 * nn], af[mt], bfr[0], bfr[1]);
      mma_bf16_16816(acc[mt][2 * nn + 1], af[mt], bfr[2], bfr[3]);
    }
  }
}

// Calls f(mt, nt, half, r, c) for each pair of accumulator elements this lane holds: elements
// 2 half and 2 half + 1 of acc[mt][nt] are row r and columns c, c + 1 of the warp's tile.
template <int MTiles, int NTiles8, typename F>
__device__ __forceinline__ void for_each_accumulator_pair(F f) {
  const int lane = threadIdx.x & 31;
  const int g = lane >> 2, t4 = lane & 3;
#pragma unroll
  for (int mt = 0; mt < MTiles; mt++)
#pragma unroll
    for (int nt = 0; nt < NTiles8; nt++)
#pragma unroll
      for (int half = 0; half < 2; half++) f(mt, nt, half, mt * 16 + g + half * 8, nt * 8 + t4 * 2);
}
