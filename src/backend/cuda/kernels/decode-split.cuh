// How one decode splits its visible keys over the launch's partition CTAs. A launch has
// num_partitions CTAs for each (decode, kv head), sized for the widest block table of the step
// (a graph's batch rounds it up to a power of two, so that the recording replays while sequences
// grow); each decode uses only as many as its own keys are worth — ceil(keys / min_keys), at most
// num_partitions, sizes in whole tiles of TILE keys — and the CTAs past them return at once. (Split
// for the widest table, a short decode beside a long one took the long one's partitions, nearly
// all empty, and a merge over all of them.) Rounding the count up keeps a short context's
// partitions near min_keys keys: 200 keys at 64 go in four partitions of 64 (one tile of the
// tensor-core kernel each), where rounding down gave three of 96 and two tiles on the critical
// path (Qwen3-30B-A3B at batch 1 on the H100: 9.47 against 9.98 µs a layer). Every partition but
// the last holds more than min_keys / 2 keys. Integer arithmetic only, so
// test/backend/cuda/decode-split.test.ts checks it on the host (and attention-plan.ts's decodeSplit,
// its host twin, against it).
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
  const int worth = (keys + min_keys - 1) / min_keys;
  const int wanted = worth < 1 ? 1 : (worth < num_partitions ? worth : num_partitions);
  const int per = (keys + wanted - 1) / wanted;
  const int size = per <= TILE ? TILE : (per + TILE - 1) / TILE * TILE;
  const int used = (keys + size - 1) / size;
  return {used > 0 ? used : 1, size};
}
