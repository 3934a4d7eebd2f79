// What the expert kernels share: finding a block's tile in the table moe_route_kernel wrote.
#pragma once

// The tile of block y among this device's experts [first, first + count): its expert (local
// index), the first place of its rows in the expert-sorted order, and how many rows it has (at
// most tile_rows). False for the blocks past the last tile, which the fixed grid leaves over.
__device__ __forceinline__ bool local_tile(const int* tile_start, const int* tiles, const int* offsets, int first, int count, int tile_rows,
                                           int& expert, int& start, int& rows) {
  const int g = tile_start[first] + blockIdx.y;
  if (g >= tile_start[first + count]) return false;
  const int e = tiles[2 * g];
  start = tiles[2 * g + 1];
  rows = min(tile_rows, offsets[e + 1] - start);
  expert = e - first;
  return true;
}
