// Batched multi-LoRA, segmented (SGMV style) on bf16 tensor cores (mma.sync m16n8k16, sm_80+).
// The host sorts a step's adapted tokens by adapter slot and cuts each slot's run into tiles of at
// most TILE tokens (lora-tiles.ts): a block takes one tile, so it streams its adapter's matrices
// once for up to TILE tokens, whatever the order of the step's sequences. Two launches per adapted
// linear, every slice (q/k/v, gate/up) in each:
//
// - shrink, v = x · Aᵀ: rows the tile's tokens (gathered from x through `order`), columns the rank,
//   k the input width, split over grid.z so that a decode step's few tiles still fill the GPU; each
//   split writes its own float32 partial, summed by the expand (deterministic, no atomics);
// - expand, out += v · Bᵀ: rows the tile's tokens, columns the outputs, k the rank; v enters the
//   mma as two bf16 halves (hi + lo, 16 significant bits) so the product keeps v's float32
//   precision; added to the linear's bf16 output in float32 and rounded once.
//
// Grids depend on the step's shape only (blocks past the step's tiles exit), so decode steps with
// adapters replay as CUDA graphs. Slots beyond a slot's own rank are zero rows; the kernels stop at
// the rank rounded up to 16.
//
// Weights, per linear: a [slots, S, RP, in] (slice s's A in its first rank rows), b [slots, out,
// RP] (each output row's B, the adapter's scale folded in), ranks [slots]; RP the max rank rounded
// up to 16. v [splits, tokens, S, RP] float32, rows in sorted order.
//
// Each thread's mma fragments read k in a permuted order (the sum over k does not care, as long as
// both operands use the same one): in the shrink, lane (g, c) loads 8 consecutive k (16 bytes) of
// its rows and feeds them to two k16 steps; in the expand, 4 consecutive ranks (8 bytes of B) per
// k16 step.
#include "common.cuh"
#include "mma.cuh"

#define TILE 16
#define THREADS 128
#define WARPS (THREADS / 32)
#define SHRINK_RANKS 64  // rank columns per shrink block: 8 n-tiles
#define EXPAND_COLS 64   // output columns per expand warp: 8 n-tiles

// Tile i of the step's table [count, (slot, start, tokens)...]; false past the last one.
__device__ __forceinline__ bool lora_tile(const int* __restrict__ tiles, int i, int& slot, int& start, int& count) {
  if (i >= tiles[0]) return false;
  slot = tiles[1 + 3 * i];
  start = tiles[2 + 3 * i];
  count = tiles[3 + 3 * i];
  return true;
}

// grid (tile capacity, S * ceil(RP / SHRINK_RANKS), splits), block THREADS. Block (tile, slice s,
// rank columns r0..r0+63, inputs [z * k_split, (z + 1) * k_split)) writes v[z, start + row, s, r0 + col].
// Its warps take alternate 32-wide k steps and meet in shared memory. in_dim and k_split are
// multiples of 8.
extern "C" __global__ void __launch_bounds__(THREADS, 4) lora_shrink_kernel(
    float* __restrict__ v, const bf16* __restrict__ x, const bf16* __restrict__ a, const int* __restrict__ order,
    const int* __restrict__ tiles, const int* __restrict__ ranks, int num_tokens, int in_dim, int rp, int num_slices, int k_split) {
  PDL_PROLOGUE();
  int slot, start, count;
  if (!lora_tile(tiles, blockIdx.x, slot, start, count)) return;
  const int s = blockIdx.y % num_slices, r0 = (blockIdx.y / num_slices) * SHRINK_RANKS;
  const int rank16 = (ranks[slot] + 15) & ~15;
  if (r0 >= rank16) return;
  const int n_tiles = min(SHRINK_RANKS, rank16 - r0) / 8;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, c = lane & 3;
  const int k_begin = blockIdx.z * k_split, k_end = min(in_dim, k_begin + k_split);
  const uint4 zero = make_uint4(0u, 0u, 0u, 0u);
  // Rows g and g + 8 of the tile; past the tile's tokens they are zeros (and read nothing).
  const uint4* x0 = g < count ? reinterpret_cast<const uint4*>(x + (long long)order[start + g] * in_dim) : nullptr;
  const uint4* x1 = g + 8 < count ? reinterpret_cast<const uint4*>(x + (long long)order[start + g + 8] * in_dim) : nullptr;
  // Row r0 + nt * 8 + g of slice s's A: the B operand's column g of n-tile nt.
  const bf16* a_row = a + (((long long)slot * num_slices + s) * rp + r0 + g) * in_dim;
  float acc[SHRINK_RANKS / 8][4];
#pragma unroll
  for (int nt = 0; nt < SHRINK_RANKS / 8; nt++) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;
  for (int kb = k_begin + warp * 32; kb < k_end; kb += WARPS * 32) {
    const int k = kb + 8 * c;
    const bool in_range = k < k_end;
    const uint4 xa = in_range && x0 != nullptr ? x0[k / 8] : zero;
    const uint4 xb = in_range && x1 != nullptr ? x1[k / 8] : zero;
    uint4 w[SHRINK_RANKS / 8];
#pragma unroll
    for (int nt = 0; nt < SHRINK_RANKS / 8; nt++) {
      w[nt] = nt < n_tiles && in_range ? load_streaming(reinterpret_cast<const uint4*>(a_row + (long long)nt * 8 * in_dim + k)) : zero;
    }
    const unsigned int first[4] = {xa.x, xb.x, xa.y, xb.y};
    const unsigned int second[4] = {xa.z, xb.z, xa.w, xb.w};
#pragma unroll
    for (int nt = 0; nt < SHRINK_RANKS / 8; nt++) {
      if (nt < n_tiles) {
        mma_bf16_16816(acc[nt], first, w[nt].x, w[nt].y);
        mma_bf16_16816(acc[nt], second, w[nt].z, w[nt].w);
      }
    }
  }
  // acc[nt]: (row g, columns nt * 8 + 2c, +1) and (row g + 8, the same columns); the warps' sums.
  __shared__ float partial[WARPS][TILE][SHRINK_RANKS];
#pragma unroll
  for (int nt = 0; nt < SHRINK_RANKS / 8; nt++) {
    partial[warp][g][nt * 8 + 2 * c] = acc[nt][0];
    partial[warp][g][nt * 8 + 2 * c + 1] = acc[nt][1];
    partial[warp][g + 8][nt * 8 + 2 * c] = acc[nt][2];
    partial[warp][g + 8][nt * 8 + 2 * c + 1] = acc[nt][3];
  }
  __syncthreads();
  float* vz = v + (long long)blockIdx.z * num_tokens * num_slices * rp;
  for (int i = threadIdx.x; i < TILE * SHRINK_RANKS; i += THREADS) {
    const int row = i / SHRINK_RANKS, col = i % SHRINK_RANKS;
    if (row >= count || col >= n_tiles * 8) continue;
    float sum = 0.f;
#pragma unroll
    for (int w = 0; w < WARPS; w++) sum += partial[w][row][col];
    vz[((long long)(start + row) * num_slices + s) * rp + r0 + col] = sum;
  }
}

// Adds an mma accumulator's two columns of one row to out[row_at + col], out[row_at + col + 1],
// those below `last` (the slice's end), in float32 rounded once; one 4-byte access when aligned.
__device__ __forceinline__ void add_pair(bf16* __restrict__ out, long long row_at, int col, int last, float d0, float d1) {
  bf16* p = out + row_at + col;
  if (((row_at + col) & 1) == 0 && col + 1 < last) {
    unsigned int* word = reinterpret_cast<unsigned int*>(p);
    const unsigned int old = *word;
    *word = pack_bf16x2(bf16x2_lo(old) + d0, bf16x2_hi(old) + d1);
    return;
  }
  if (col < last) p[0] = f32_to_bf16(bf16_to_f32(p[0]) + d0);
  if (col + 1 < last) p[1] = f32_to_bf16(bf16_to_f32(p[1]) + d1);
}

// grid (tile capacity, Σ over slices of ceil(rows / (WARPS * EXPAND_COLS))), block THREADS.
// Block y is a chunk of WARPS * EXPAND_COLS output columns of one slice (the slices end at end0,
// end1 and out_dim; a linear of fewer slices passes out_dim for the missing ends); warp w takes
// EXPAND_COLS of them. out [tokens, out_dim] += v[tile rows, s] · B[columns]ᵀ, v summed over the
// shrink's splits.
extern "C" __global__ void __launch_bounds__(THREADS) lora_expand_kernel(
    bf16* __restrict__ out, const float* __restrict__ v, const bf16* __restrict__ b, const int* __restrict__ order,
    const int* __restrict__ tiles, const int* __restrict__ ranks, int num_tokens, int out_dim, int rp, int num_slices,
    int splits, int end0, int end1) {
  PDL_PROLOGUE();
  int slot, start, count;
  if (!lora_tile(tiles, blockIdx.x, slot, start, count)) return;
  int s = 0, first = 0, last = end0, chunk = blockIdx.y;
  for (; s < num_slices - 1; s++) {
    const int chunks = (last - first + WARPS * EXPAND_COLS - 1) / (WARPS * EXPAND_COLS);
    if (chunk < chunks) break;
    chunk -= chunks;
    first = last;
    last = s == 0 ? end1 : out_dim;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, c = lane & 3;
  const int o0 = first + chunk * WARPS * EXPAND_COLS + warp * EXPAND_COLS;
  if (o0 >= last) return;
  const int rank16 = (ranks[slot] + 15) & ~15;
  const long long split_stride = (long long)num_tokens * num_slices * rp;
  const float* v0 = g < count ? v + ((long long)(start + g) * num_slices + s) * rp : nullptr;
  const float* v1 = g + 8 < count ? v + ((long long)(start + g + 8) * num_slices + s) * rp : nullptr;
  // Output o0 + nt * 8 + g's B row: the B operand's column g of n-tile nt.
  const bf16* b_row = b + ((long long)slot * out_dim + o0 + g) * rp;
  const int n_tiles = min(EXPAND_COLS, last - o0 + 7) / 8;
  float acc[EXPAND_COLS / 8][4];
#pragma unroll
  for (int nt = 0; nt < EXPAND_COLS / 8; nt++) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;
  for (int k0 = 0; k0 < rank16; k0 += 16) {
    const int k = k0 + 4 * c;
    uint2 w[EXPAND_COLS / 8];
#pragma unroll
    for (int nt = 0; nt < EXPAND_COLS / 8; nt++) {
      w[nt] = nt < n_tiles && o0 + nt * 8 + g < last ? *reinterpret_cast<const uint2*>(b_row + (long long)nt * 8 * rp + k) : make_uint2(0u, 0u);
    }
    float4 va = make_float4(0.f, 0.f, 0.f, 0.f), vb = va;
    for (int z = 0; z < splits; z++) {
      if (v0 != nullptr) {
        const float4 p = *reinterpret_cast<const float4*>(v0 + z * split_stride + k);
        va.x += p.x; va.y += p.y; va.z += p.z; va.w += p.w;
      }
      if (v1 != nullptr) {
        const float4 p = *reinterpret_cast<const float4*>(v1 + z * split_stride + k);
        vb.x += p.x; vb.y += p.y; vb.z += p.z; vb.w += p.w;
      }
    }
    // A fragment rows g, g + 8; its k 2c, 2c + 1 are ranks k, k + 1 and its k 2c + 8, 2c + 9 ranks k + 2, k + 3.
    const unsigned int hi[4] = {pack_bf16x2(va.x, va.y), pack_bf16x2(vb.x, vb.y), pack_bf16x2(va.z, va.w), pack_bf16x2(vb.z, vb.w)};
    const unsigned int lo[4] = {
        pack_bf16x2(va.x - bf16x2_lo(hi[0]), va.y - bf16x2_hi(hi[0])), pack_bf16x2(vb.x - bf16x2_lo(hi[1]), vb.y - bf16x2_hi(hi[1])),
        pack_bf16x2(va.z - bf16x2_lo(hi[2]), va.w - bf16x2_hi(hi[2])), pack_bf16x2(vb.z - bf16x2_lo(hi[3]), vb.w - bf16x2_hi(hi[3]))};
#pragma unroll
    for (int nt = 0; nt < EXPAND_COLS / 8; nt++) {
      if (nt < n_tiles) {
        mma_bf16_16816(acc[nt], hi, w[nt].x, w[nt].y);
        mma_bf16_16816(acc[nt], lo, w[nt].x, w[nt].y);
      }
    }
  }
  // acc[nt]: (row g, outputs o0 + nt * 8 + 2c, +1) and (row g + 8, the same outputs).
  const long long row0 = g < count ? (long long)order[start + g] * out_dim : -1;
  const long long row1 = g + 8 < count ? (long long)order[start + g + 8] * out_dim : -1;
#pragma unroll
  for (int nt = 0; nt < EXPAND_COLS / 8; nt++) {
    if (nt >= n_tiles) continue;
    const int col = o0 + nt * 8 + 2 * c;
    if (row0 >= 0) add_pair(out, row0, col, last, acc[nt][0], acc[nt][1]);
    if (row1 >= 0) add_pair(out, row1, col, last, acc[nt][2], acc[nt][3]);
  }
}
