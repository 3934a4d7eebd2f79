// Which row of a paged K or V tile each copy writes, and which lane of its warp looked that row's
// cache slot up. A tile of TILE_ROWS rows, CHUNKS 16-byte (or code) chunks a row, is copied by
// THREADS threads in ROUNDS rounds: chunk c = thread + i · THREADS of round i belongs to row
// c / CHUNKS. A warp's chunks of one round cover PER_ROUND whole rows, and all its rounds no more
// rows than it has lanes, so lane j looks up the slot of row `lane_row(j)` once a tile and every
// copy takes its row's slot from lane `source_lane(i)` by a shuffle. (Looking the slot up per chunk
// put a block-table read and a division before every copy, one after another.) Integer arithmetic
// only, so test/backend/cuda/kv-tile-rows.test.ts checks it on the host.
#pragma once

#if !defined(__CUDACC__) && !defined(__CUDACC_RTC__)  // a host compiler (the header's test): no execution spaces
#define __host__
#define __device__
#endif

template <int TILE_ROWS, int CHUNKS, int THREADS>
struct KvTileRows {
  static constexpr int ROUNDS = TILE_ROWS * CHUNKS / THREADS;
  static constexpr int PER_ROUND = CHUNKS <= 32 ? 32 / CHUNKS : 1;
  // Whether the shuffled slots apply: whole rows a warp-round, every thread the same rounds, and a
  // lane for each row a warp copies. Otherwise each copy looks its row up itself.
  static constexpr bool BY_LANE =
      CHUNKS <= 32 && 32 % CHUNKS == 0 && THREADS % 32 == 0 && TILE_ROWS * CHUNKS % THREADS == 0 && TILE_ROWS <= THREADS;

  // The tile row whose slot lane `lane` of the warp of thread `thread` looks up, or -1 for none.
  __host__ __device__ static constexpr int lane_row(int thread, int lane) {
    return lane / PER_ROUND < ROUNDS ? ((thread & ~31) + lane / PER_ROUND * THREADS) / CHUNKS + lane % PER_ROUND : -1;
  }
  // The lane holding the slot of the row that thread `thread` copies into in round `round`.
  __host__ __device__ static constexpr int source_lane(int thread, int round) { return round * PER_ROUND + (thread & 31) / CHUNKS; }
};
