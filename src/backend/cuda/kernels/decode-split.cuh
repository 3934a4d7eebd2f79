// How one decode splits its visible keys over the launch's partition CTAs. A launch has
// num_partitions CTAs for each (decode, kv head), sized for the longest context the step's block
// tables hold, so that a recorded graph replays while sequences grow; each decode uses only as many
// as its own keys are worth — none shorter than min_keys unless it has fewer, at most
// num_partitions, sizes in whole tiles of TILE keys — and the CTAs past them return at once. (Split
// for the tables' capacity, a 200-key decode of a model whose tables hold 40k keys took 132
// partitions a kv head, nearly all empty, and a merge over all of them.) Integer arithmetic only,
// so test/backend/cuda/decode-split.test.ts checks it on the host.
#pragma once

#if !defined(__CUDACC__) && !defined(__CUDACC_RTC__)  // a host compiler (the header's test): no execution spaces
#define __host__
#define __device__
#define __forceinline__ inline
#endif

// Keys of a decode kernel's tile: partitions are whole tiles (attention-plan.ts's DECODE_TILE_KEYS).
constexpr int DECODE_SPLIT_TILE = 32;

struct DecodeSplit {
  int used;  // partitions that hold keys: 1 writes the output directly, more write partials and merge
  int size;  // keys a partition, a multiple of the kernel's tile
};

// TILE: the kernel's keys a tile (MLA's decode kernel takes 64).
template <int TILE = DECODE_SPLIT_TILE>
__host__ __device__ __forceinline__ DecodeSplit decode_split(int visible, int num_partitions, int min_keys) {
  const int keys = visible > 0 ? visible : 0;
  const int wanted = keys < min_keys ? 1 : (keys / min_keys < num_partitions ? keys / min_keys : num_partitions);
  const int per = (keys + wanted - 1) / wanted;
  const int size = per <= TILE ? TILE : (per + TILE - 1) / TILE * TILE;
  const int used = (keys + size - 1) / size;
  return {used > 0 ? used : 1, size};
}
