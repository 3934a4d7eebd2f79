import type { LoraBenchmark } from '../../bench/lora-benchmark.ts';
import { kernelBench } from './kernel-bench.ts';

export const LORA_HELP = `Usage: keel bench lora [--output FILE]

Times Keel's CUDA LoRA kernels alone (CUDA events over graph replays): Backend.addLora on one
layer of Llama-3.1-8B's four adapted linears (q/k/v, o, gate/up, down) at ranks 16 and 64, for a
decode step of 128 sequences with 1, 8 and 32 adapters and a prefill step of 4 chunks of 512
tokens with 1 and 4 adapters (round robin over the sequences, a slot each), beside the same
linears' own matmuls; the adapters' bytes (each read once) per second of the LoRA time. Needs the
CUDA backend. Writes JSON to ./bench-results/ (or --output).

  --output FILE                  where to write the JSON result`;

export function loraCommand(argv: string[]): Promise<void> {
  return kernelBench('lora', argv, LORA_HELP, measure, record, report);
}

// Loaded on demand: the benchmark pulls in the CUDA backend.
async function measure(): Promise<LoraBenchmark> {
  return (await import('../../bench/lora-benchmark.ts')).runLoraBenchmark();
}

function record(result: LoraBenchmark) {
  const config = { kernels: 'lora.cu', shapes: 'llama-3.1-8b, one layer', dtype: 'bf16', timing: 'CUDA events over graph replays, median of 7' };
  return { config, suite: 'lora' as const, results: { figures: result.figures } };
}

function report(result: LoraBenchmark, path: string): void {
  for (const f of result.figures) {
    const adapters = `${f.adapters} adapter${f.adapters === 1 ? '' : 's'}`;
    console.log(`${f.step} ${f.tokens} tokens, ${adapters}, rank ${f.rank}: LoRA ${f.lora_us.toFixed(1)} us per layer, matmuls ${f.base_us.toFixed(1)} us (+${(100 * f.overhead).toFixed(1)} %), adapters read at ${f.adapter_gb_per_s.toFixed(0)} GB/s`);
  }
  console.log(`wrote ${path}`);
}
