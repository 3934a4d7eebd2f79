import { KeelError } from '../errors.ts';
import { didYouMean } from './parse-flags.ts';

export const BENCH_HELP = `Usage: keel bench <suite> [options]

The benchmarks the field runs, with vLLM's methodology and metric names; each writes a JSON
result (device, git commit, date, full config, every figure) to ./bench-results/ or --output.

Suites:
  latency      batch latency: TTFT, TPOT, end-to-end, tokens/s and memory-roofline fraction per batch size
  throughput   offline throughput: a whole dataset submitted at once (--workload nano-vllm for nano-vllm's)
  serve        online serving against keel serve (--base-url, or --launch one here): Poisson arrivals,
               TTFT/TPOT/ITL/e2e percentiles, request and token throughput
  attention    CUDA attention kernels alone: prefill TFLOP/s (beside PyTorch SDPA's), decode GB/s
  linear       CUDA linear kernels alone, per weight format (bf16, fp8, int8, int4, mxfp4 experts) and
               batch rows: GB/s and TFLOP/s against bf16 cuBLAS
  lora         CUDA LoRA kernels alone: one 8B layer's addLora beside its matmuls, decode and prefill
  verify       speculative verification's cost: one target pass of q query tokens per sequence (logits at
               each) beside a plain decode step, per batch size (default: Llama-3.1-8B, dummy weights)
  plot         render result files of one suite to an SVG chart

Random weights of a real architecture: --model bench/configs/llama-3.1-8b --load-format dummy.
latency, throughput, serve and verify take the engine options; --seed (default 0) also seeds the random dataset.
Run \`keel bench <suite> --help\` for its options; docs/benchmarks.md for the methodology.`;

interface Suite {
  run: (argv: string[]) => Promise<void>;
  help: string;
}

// Loaded on demand: a latency run on the GPU host needs neither the plotting nor the HTTP packages.
const SUITES: Record<string, () => Promise<Suite>> = {
  latency: async () => {
    const m = await import('./bench/latency-command.ts');
    return { run: m.latencyCommand, help: m.LATENCY_HELP };
  },
  throughput: async () => {
    const m = await import('./bench/throughput-command.ts');
    return { run: m.throughputCommand, help: m.THROUGHPUT_HELP };
  },
  serve: async () => {
    const m = await import('./bench/serve-command.ts');
    return { run: m.serveBenchCommand, help: m.SERVE_BENCH_HELP };
  },
  attention: async () => {
    const m = await import('./bench/attention-command.ts');
    return { run: m.attentionCommand, help: m.ATTENTION_HELP };
  },
  linear: async () => {
    const m = await import('./bench/linear-command.ts');
    return { run: m.linearCommand, help: m.LINEAR_HELP };
  },
  lora: async () => {
    const m = await import('./bench/lora-command.ts');
    return { run: m.loraCommand, help: m.LORA_HELP };
  },
  verify: async () => {
    const m = await import('./bench/verify-command.ts');
    return { run: m.verifyCommand, help: m.VERIFY_HELP };
  },
  plot: async () => {
    const m = await import('./bench/plot-command.ts');
    return { run: m.plotCommand, help: m.PLOT_HELP };
  },
};

export async function benchCommand(argv: string[]): Promise<void> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h') {
    console.log(BENCH_HELP);
    return;
  }
  const load = SUITES[name];
  if (!load) throw new KeelError('invalid_argument', `unknown benchmark "${name}"${didYouMean(name, Object.keys(SUITES))} (suites: ${Object.keys(SUITES).join(', ')})`);
  await (await load()).run(rest);
}
