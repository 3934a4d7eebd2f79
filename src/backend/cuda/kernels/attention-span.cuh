// Per-query options of the paged attention kernels that depend on the query's position (Llama 4, Ministral 3):
// chunked attention and attention temperature tuning. Both are runtime arguments that are 0 when
// off, so every layer of a model shares one specialization of each kernel.
#pragma once

// The first key a query at position p sees inside its attention chunk: p - p % chunk; 0 without
// chunks (chunk 0). A padding row's p of -1 gives 0 as well.
__device__ __forceinline__ int chunk_first_key(int p, int chunk) { return chunk > 0 && p > 0 ? p - p % chunk : 0; }

// The factor a query at position p is scaled by: 1 + temp_scale · ln(1 + floor((p + temp_offset) / temp_floor)),
// or 1 without temperature tuning (temp_floor 0). temp_offset is 1 for Llama 4 (it counts positions from 1),
// 0 for Ministral 3.
__device__ __forceinline__ float query_temperature(int p, float temp_floor, float temp_scale, int temp_offset) {
  return temp_floor > 0.f ? 1.f + temp_scale * log1pf(floorf((float)(p + temp_offset) / temp_floor)) : 1.f;
}
