import { KeelError } from '../errors.ts';
import { LATENCY_HELP, latencyCommand } from '../bench/commands/latency-command.ts';
import { PLOT_HELP, plotCommand } from '../bench/commands/plot-command.ts';
import { SERVE_BENCH_HELP, serveBenchCommand } from '../bench/commands/serve-command.ts';
import { THROUGHPUT_HELP, throughputCommand } from '../bench/commands/throughput-command.ts';

export const BENCH_HELP = `Usage: keel bench <suite> [options]

The benchmarks the field runs, with vLLM's methodology and metric names; each writes a JSON
result (device, git commit, date, full config, every figure) to bench/results/ or --output.

Suites:
  latency      batch latency: TTFT, TPOT, end-to-end, tokens/s and memory-roofline fraction per batch size
  throughput   offline throughput: a whole dataset submitted at once (--workload nano-vllm for nano-vllm's)
  serve        online serving against keel serve (--base-url, or --launch one here): Poisson arrivals,
               TTFT/TPOT/ITL/e2e percentiles, request and token throughput
  plot         render result files of one suite to an SVG chart

Random weights of a real architecture: --model bench/configs/llama-3.1-8b --load-format dummy.
Run \`keel bench <suite> --help\` for its options; docs/benchmarks.md for the methodology.`;

const SUITES: Record<string, { run: (argv: string[]) => Promise<void>; help: string }> = {
  latency: { run: latencyCommand, help: LATENCY_HELP },
  throughput: { run: throughputCommand, help: THROUGHPUT_HELP },
  serve: { run: serveBenchCommand, help: SERVE_BENCH_HELP },
  plot: { run: plotCommand, help: PLOT_HELP },
};

export async function benchCommand(argv: string[]): Promise<void> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h') {
    console.log(BENCH_HELP);
    return;
  }
  const suite = SUITES[name];
  if (!suite) throw new KeelError('invalid_argument', `unknown benchmark "${name}" (suites: ${Object.keys(SUITES).join(', ')})`);
  await suite.run(rest);
}
