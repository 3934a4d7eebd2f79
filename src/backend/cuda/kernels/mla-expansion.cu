// MLA's expanded prefill (mla-expansion.ts): a chunk's context is gathered out of the paged pool
// of rows [latent | rotated key part] into a contiguous scratch laid out in blocks of its own, so
// that the latents can be projected to every head's keys and values by two GEMMs and attended by
// the wgmma prefill kernel as an ordinary cache.
#include "common.cuh"

// nvcc-check: -DKV_DTYPE=0
// nvcc-check: -DKV_DTYPE=1
// nvcc-check: -DKV_DTYPE=2

#ifndef KV_DTYPE
#error "compile with -DKV_DTYPE=<0 bf16 | 1 fp8 | 2 int8>"
#endif

// grid (scratch blocks), any block size. Scratch block b holds block_rows keys of one sequence:
// scratch_blocks [blocks, 2] = (sequence, first key). Its row r = b · block_rows + i stands for key
// j = first + i; below the sequence's length its cache row (the slot its block table gives; an
// 8-bit row dequantized, int8 by its row scale, fp8 by row_scale) goes to latent_out [r, 0 ..
// latent) and its rotary part to every head's key, keys [r, h, nope .. nope + rope) of rows
// num_heads · (nope + rope) wide, whose first nope columns the GEMM fills. Rows past the length get
// zeros. latent, rope and nope are multiples of 8.
extern "C" __global__ void mla_expand_gather_kernel(bf16* __restrict__ latent_out, bf16* __restrict__ keys, const unsigned char* __restrict__ pool,
                                                    const float* __restrict__ row_scales, float row_scale, const int* __restrict__ scratch_blocks,
                                                    int block_rows, const int* __restrict__ seq_lens, const int* __restrict__ block_tables,
                                                    int max_blocks_per_seq, int block_size, int num_heads, int nope, int latent, int rope) {
  PDL_PROLOGUE();
  const int seq = scratch_blocks[2 * blockIdx.x], first = scratch_blocks[2 * blockIdx.x + 1];
  const int len = seq_lens[seq];
  const int* table = block_tables + (long long)seq * max_blocks_per_seq;
  const int latent_chunks = latent / 8, row_chunks = (latent + rope) / 8, width = latent + rope, key_width = nope + rope;
  for (int c = threadIdx.x; c < block_rows * row_chunks; c += blockDim.x) {
    const int i = c / row_chunks, ch = c % row_chunks, j = first + i;
    const long long r = (long long)blockIdx.x * block_rows + i;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (j < len) {
      const long long slot = (long long)table[j / block_size] * block_size + j % block_size;
#if KV_DTYPE == 0
      v = *reinterpret_cast<const uint4*>(pool + (slot * width + ch * 8) * 2);
#else
      v = dequantize8<KV_DTYPE>(*reinterpret_cast<const uint2*>(pool + slot * width + ch * 8), KV_DTYPE == 2 ? row_scales[slot] : row_scale);
#endif
    }
    if (ch < latent_chunks) {
      *reinterpret_cast<uint4*>(latent_out + r * latent + ch * 8) = v;
    } else {
      bf16* key = keys + r * num_heads * key_width + nope + (ch - latent_chunks) * 8;
      for (int h = 0; h < num_heads; h++) *reinterpret_cast<uint4*>(key + h * key_width) = v;
    }
  }
}
