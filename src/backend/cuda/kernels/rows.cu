// Row gathers: the embedding lookup (rows of the table by token id) and the logits rows; and the
// sampled ids mapped through a table (a speculative head's vocabulary to the target's).
#include "common.cuh"

// out[r, :] = src[indices[r], :] for a row of `chunks` 16-byte chunks. One block per output row.
extern "C" __global__ void gather_rows_kernel(uint4* __restrict__ out, const uint4* __restrict__ src,
                                              const int* __restrict__ indices, int chunks) {
  PDL_PROLOGUE();
  const long long row = indices[blockIdx.x];
  const uint4* from = src + row * chunks;
  uint4* to = out + (long long)blockIdx.x * chunks;
  for (int c = threadIdx.x; c < chunks; c += blockDim.x) to[c] = from[c];
}

// The embedding lookup: out[r, :] = table[id, :] * scale, id the table row of token row r
// (embedding_row: the token id or the one sampled on the device, less the shard's first id; -1 gives
// a zero row). Quantized tables: embed_quantized_tokens_kernel (quantized-linear.cu).
extern "C" __global__ void embed_tokens_kernel(uint4* __restrict__ out, const uint4* __restrict__ table,
                                               const int* __restrict__ tokens, const int* __restrict__ sources,
                                               const int* __restrict__ sampled, int first_row, int vocab, int chunks,
                                               float scale) {
  PDL_PROLOGUE();
  const int id = embedding_row(blockIdx.x, tokens, sources, sampled, first_row, vocab);
  uint4* to = out + (long long)blockIdx.x * chunks;
  if (id < 0) {
    for (int c = threadIdx.x; c < chunks; c += blockDim.x) to[c] = make_uint4(0, 0, 0, 0);
    return;
  }
  const uint4* from = table + (long long)id * chunks;
  if (scale == 1.0f) {
    for (int c = threadIdx.x; c < chunks; c += blockDim.x) to[c] = from[c];
    return;
  }
  for (int c = threadIdx.x; c < chunks; c += blockDim.x) {
    float f[8];
    unpack8(from[c], f);
    for (int i = 0; i < 8; i++) f[i] *= scale;
    to[c] = pack8(f);
  }
}

// The scatter of gather_rows_kernel: out[indices[r], :] = src[r, :] (a speculative head's hidden
// rows written to their tokens' slots). One block per source row.
extern "C" __global__ void scatter_rows_kernel(uint4* __restrict__ out, const uint4* __restrict__ src,
                                               const int* __restrict__ indices, int chunks) {
  PDL_PROLOGUE();
  const long long row = indices[blockIdx.x];
  const uint4* from = src + (long long)blockIdx.x * chunks;
  uint4* to = out + row * chunks;
  for (int c = threadIdx.x; c < chunks; c += blockDim.x) to[c] = from[c];
}

// out[slot(s), :] = src[s, :] where slot(s) is the slot of cache index seq_lens[s] of sequence s
// (the position after its last token this step) through its block table, [numSeqs, max_blocks]:
// a speculative head's output, the feature its next drafting pass reads. The host checked that
// every table reaches its slot. One block per sequence.
extern "C" __global__ void scatter_rows_after_kernel(uint4* __restrict__ out, const uint4* __restrict__ src,
                                                     const int* __restrict__ block_tables,
                                                     const int* __restrict__ seq_lens, int max_blocks,
                                                     int block_size, int chunks) {
  PDL_PROLOGUE();
  const int index = seq_lens[blockIdx.x];
  const long long block = block_tables[(long long)blockIdx.x * max_blocks + index / block_size];
  const long long row = block * block_size + index % block_size;
  const uint4* from = src + (long long)blockIdx.x * chunks;
  uint4* to = out + row * chunks;
  for (int c = threadIdx.x; c < chunks; c += blockDim.x) to[c] = from[c];
}

// out[r, offset : offset + chunks] = src[r, :] in 16-byte chunks, out rows `outChunks` wide: one
// part of a column concatenation. One block per row.
extern "C" __global__ void copy_columns_kernel(uint4* __restrict__ out, const uint4* __restrict__ src,
                                               int outChunks, int offset, int chunks) {
  PDL_PROLOGUE();
  const uint4* from = src + (long long)blockIdx.x * chunks;
  uint4* to = out + (long long)blockIdx.x * outChunks + offset;
  for (int c = threadIdx.x; c < chunks; c += blockDim.x) to[c] = from[c];
}

// The same copy in bf16 elements, for parts whose width is not whole 16-byte chunks (a few heads'
// per-head values: Kimi Delta Attention's beta, or a tensor-parallel shard of them). One block per row.
extern "C" __global__ void copy_columns_elements_kernel(bf16* __restrict__ out, const bf16* __restrict__ src,
                                                        int out_cols, int offset, int cols) {
  PDL_PROLOGUE();
  const bf16* from = src + (long long)blockIdx.x * cols;
  bf16* to = out + (long long)blockIdx.x * out_cols + offset;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) to[c] = from[c];
}

// An all-gather's blocks [blocks, rows, chunks] (device b's [rows, chunks] at block b) laid side by
// side: out[r, b * chunks + c] = in[b, r, c], a vocab-parallel LM head's logits in vocabulary
// order. One block per (output row, gathered block).
extern "C" __global__ void column_blocks_kernel(uint4* __restrict__ out, const uint4* __restrict__ in, int rows,
                                                int chunks, int blocks) {
  PDL_PROLOGUE();
  const long long row = blockIdx.x;
  const long long b = blockIdx.y;
  const uint4* from = in + (b * rows + row) * chunks;
  uint4* to = out + (row * blocks + b) * chunks;
  for (int c = threadIdx.x; c < chunks; c += blockDim.x) to[c] = from[c];
}

// ids[i] = map[ids[i]] for ids[i] >= 0 (-1, a draw without a finite logit, stays): the ids a
// sampling pass left where the next pass reads its tokens, mapped from an EAGLE-3 head's draft
// vocabulary to the target's. Ids past the map (never drawn from a row of its width) give -1.
extern "C" __global__ void map_ids_kernel(int* __restrict__ ids, const int* __restrict__ map, int n, int mapSize) {
  PDL_PROLOGUE();
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int id = ids[i];
  if (id >= 0) ids[i] = id < mapSize ? map[id] : -1;
}
