import type { LLM } from '../engine/llm.ts';
import type { SamplingParams } from '../sampling/sampling-params.ts';
import type { BenchRequest } from './random-dataset.ts';
import type { ThroughputResults } from './result-schema.ts';
import { throughputRoofline, type RooflineInputs } from './roofline.ts';
import { speculationFigures } from './speculation-figures.ts';
import { withStepTimeline, type StepTimelineSink } from './step-timeline-run.ts';

/**
 * `keel bench throughput`, vLLM's offline methodology: every request is submitted at once and
 * the engine's continuous batching works through them; the figures are totals over wall time.
 * Each request generates exactly its output length (EOS ignored), sampling with `sampling`.
 */
export async function runThroughputSuite(
  llm: LLM,
  workload: string,
  requests: BenchRequest[],
  sampling: Partial<SamplingParams>,
  device: RooflineInputs & { flopsPerSecond: number | null; bandwidthBytesPerSecond: number | null },
  onRequestDone: () => void = () => undefined,
  /** The LoRA adapter request i runs with (undefined: the base model). */
  loraOf: (i: number) => string | undefined = () => undefined,
  /** Records the run's steps (null: no timeline, the default). */
  timeline: StepTimelineSink | null = null,
): Promise<ThroughputResults> {
  const before = llm.stats().speculation;
  const start = performance.now();
  // One generate call per request (each has its own output length), all made before the engine's first step.
  const { value, timeline: steps } = await withStepTimeline(llm, timeline, async () => {
    const outputs = await Promise.all(
      requests.map(async (r, i) => {
        const lora = loraOf(i);
        const output = await llm.generate([r.promptTokenIds], { ...sampling, maxTokens: r.outputLen, ignoreEos: true }, lora === undefined ? {} : { lora });
        onRequestDone();
        return output;
      }),
    );
    // Before the timeline's last steps are read and summed.
    return { outputs, elapsedS: (performance.now() - start) / 1000 };
  });
  const { outputs, elapsedS } = value;
  const inputTokens = requests.reduce((n, r) => n + r.promptTokenIds.length, 0);
  const outputTokens = outputs.reduce((n, [o]) => n + o.outputs[0].tokenIds.length, 0);
  return {
    workload,
    num_requests: requests.length,
    elapsed_s: elapsedS,
    total_input_tokens: inputTokens,
    total_output_tokens: outputTokens,
    requests_per_s: requests.length / elapsedS,
    input_tokens_per_s: inputTokens / elapsedS,
    output_tokens_per_s: outputTokens / elapsedS,
    total_tokens_per_s: (inputTokens + outputTokens) / elapsedS,
    roofline: throughputRoofline(
      device,
      requests.map((r) => ({ inputLen: r.promptTokenIds.length, outputLen: r.outputLen })),
      elapsedS,
      device,
    ),
    speculation: speculationFigures(before, llm.stats().speculation),
    ...(steps === null ? {} : { step_timeline: steps }),
  };
}
