import { ATTENTION_SECTIONS } from '../../bench/attention-sections.ts';
import { kernelBench } from './kernel-bench.ts';

export const ATTENTION_HELP = `Usage: keel bench attention [--only SECTIONS] [--output FILE]

Times Keel's CUDA attention kernels alone (CUDA events over graph replays): prefill attention in
causal TFLOP/s at batch 1 and 512 / 2048 / 8192 tokens with Llama-3.1-8B's heads (32 query, 8 KV,
head dim 128) — the shapes tools/peers/hf_peers.py --only sdpa gives PyTorch's SDPA (flash and cuDNN backends) — once per
prefill kernel (prefill-attention.cu, and on a Hopper GPU prefill-attention-wgmma.cu too), the same
at 2048 / 8192 tokens with Phi-3-mini's heads (32 query and KV, head dim 96, which the wgmma kernel
pads to 128 in shared memory; hf_peers.py --arch phi-3-mini --only sdpa is their peer), and
decode attention in KV bytes read per second at 1k / 8k / 32k context for batch 1 and 16 and at
256 tokens, batch 1, with Qwen3-30B-A3B's heads (32 query, 4 KV), each over a bf16 cache with both
decode kernels (tensor-cores: decode-attention-mma.cu; cuda-cores: decode-attention.cu;
KEEL_DECODE_ATTENTION picks the one models use), at offline throughput's small-model shape
(Qwen3-0.6B's heads, 256 sequences at 640 tokens) with a bf16 (both kernels), fp8, int8 and int4
cache, and at 32k, batch 16, with fp8, int8 and int4 caches; MLA
(latent 512 + rope 64) with 16 and 128 heads, decode at 4k / 32k / 128k context for batch 1 and 16
in cached bytes read per second and as a fraction of the read bandwidth, each with both decode
kernels (flash: mla-decode.cu; tiled: mla.cu; KEEL_MLA_DECODE picks the one models use), and
prefill at 2048 / 8192 tokens from the queries to the heads' values in each form (absorbed: mla.cu;
expanded, on a Hopper GPU: the context projected to keys of 192 and values of 128, then the wgmma
kernel; KEEL_MLA_PREFILL picks the one models use; hf_peers.py --arch deepseek-v2-lite --only sdpa
is the expanded shapes' peer), each in its own form's TFLOP/s; beside the device's read and copy
bandwidth and a bf16 cuBLAS GEMM. Needs the CUDA backend.
Writes JSON to ./bench-results/ (or --output).

  --only SECTIONS                a comma-separated choice of ${ATTENTION_SECTIONS.join(', ')}
                                 (default: all); the others' lists in the JSON are empty
  --output FILE                  where to write the JSON result`;

export async function attentionCommand(argv: string[]): Promise<void> {
  await kernelBench(
    'attention',
    argv,
    ATTENTION_HELP,
    async (sections) => (await import('../../bench/attention-benchmark.ts')).runAttentionBenchmark(0, sections),
    (figures) => ({
      config: { kernels: 'prefill-attention.cu, prefill-attention-wgmma.cu (sm_90a), decode-attention.cu, decode-attention-mma.cu, mla.cu, mla-decode.cu', dtype: 'bf16', block_size: 16, timing: 'CUDA events over graph replays, median of 7' },
      suite: 'attention',
      results: { shapes: figures.prefill, decode: figures.decode, mla_decode: figures.mlaDecode, mla_prefill: figures.mlaPrefill, ceilings: figures.ceilings },
    }),
    (figures, path) => {
      for (const p of figures.prefill) {
        console.log(`prefill ${p.num_heads}/${p.num_kv_heads} heads of ${p.head_dim}, ${p.seq_len} tokens (${p.kernel}): ${p.ms.toFixed(3)} ms, ${p.tflops.toFixed(1)} TFLOP/s`);
      }
      for (const d of figures.decode) {
        console.log(`decode (${d.kernel}) ${d.num_heads}/${d.num_kv_heads} heads, batch ${d.batch} at ${d.context_len}, ${d.kv_dtype} KV: ${d.us.toFixed(1)} us, ${d.gb_per_s.toFixed(0)} GB/s`);
      }
      for (const d of figures.mlaDecode) {
        console.log(`MLA decode (${d.kernel}) ${d.num_heads} heads, batch ${d.batch} at ${d.context_len}: ${d.us.toFixed(1)} us, ${d.gb_per_s.toFixed(0)} GB/s (${d.read_fraction.toFixed(2)} of read)`);
      }
      for (const p of figures.mlaPrefill) console.log(`MLA prefill ${p.form} ${p.num_heads} heads, ${p.seq_len} tokens: ${p.ms.toFixed(3)} ms, ${p.tflops.toFixed(1)} TFLOP/s`);
      console.log(`ceilings: read ${figures.ceilings.read_gb_per_s.toFixed(0)} GB/s, copy ${figures.ceilings.copy_gb_per_s.toFixed(0)} GB/s, bf16 GEMM ${figures.ceilings.gemm_bf16_8192_tflops.toFixed(0)} TFLOP/s`);
      console.log(`wrote ${path}`);
    },
    ATTENTION_SECTIONS,
  );
}
