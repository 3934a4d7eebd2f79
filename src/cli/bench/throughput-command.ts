import { ENGINE_FLAGS, ENGINE_FLAGS_HELP, engineConfigFromFlags } from '../engine-flags.ts';
import { SAMPLING_FLAGS, samplingParamsFromFlags } from '../sampling-flags.ts';
import { stepTimelineReport, throughputReport } from '../../bench/console-report.ts';
import { STEP_TIMELINE_HELP, writeStepTimeline } from '../../bench/step-timeline-file.ts';
import { stepTimelineLine } from '../../engine/step-timeline-file.ts';
import type { StepRecord } from '../../engine/step-timeline.ts';
import { engineSettings, keelRunHeader, loadBenchEngine, rooflineInputs } from '../../bench/keel-run.ts';
import { NANO_VLLM_WORKLOAD } from '../../bench/random-dataset.ts';
import { writeResult } from '../../bench/result-file.ts';
import type { SamplingParams } from '../../sampling/sampling-params.ts';
import { RESULT_SCHEMA_VERSION, type ThroughputResults } from '../../bench/result-schema.ts';
import { runThroughputSuite } from '../../bench/throughput-suite.ts';
import { benchProgress } from '../../bench/progress.ts';
import { DATASET_FLAGS, DATASET_FLAGS_HELP, nonNegativeIntFlag, positiveIntFlag, SYNTHETIC_ACCEPTANCE_HELP, withSyntheticAcceptance, workloadConfig, workloadFromFlags, workloadRequests } from './bench-flags.ts';
import { invalidArgument } from '../../errors.ts';
import { parseFlags } from '../parse-flags.ts';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeRandomLoraAdapter } from '../../bench/random-lora.ts';

/** Rank of the random adapters of --lora-adapters: a common fine-tuning rank. */
const DEFAULT_LORA_RANK = 16;

/** vLLM's offline throughput benchmark samples at temperature 1. */
const RANDOM_TEMPERATURE = 1;

const BENCH_SAMPLING_FLAGS = {
  'top-p': SAMPLING_FLAGS['top-p'],
  'top-k': SAMPLING_FLAGS['top-k'],
  'min-p': SAMPLING_FLAGS['min-p'],
  'repetition-penalty': SAMPLING_FLAGS['repetition-penalty'],
  'presence-penalty': SAMPLING_FLAGS['presence-penalty'],
  'frequency-penalty': SAMPLING_FLAGS['frequency-penalty'],
  logprobs: SAMPLING_FLAGS.logprobs,
};

/** The sampling options given, snake_cased as the result's config names them. */
function samplingConfig(sampling: Partial<SamplingParams>): Record<string, number | null> {
  const { temperature: _, ...rest } = sampling;
  return Object.fromEntries(Object.entries(rest).map(([k, v]) => [k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`), v as number | null]));
}

export const THROUGHPUT_HELP = `Usage: keel bench throughput [options]

Offline throughput, as vLLM measures it: every request of the dataset is submitted at once and
the engine batches them continuously; reports requests/s and input, output and total tokens/s
over the wall time, and the fraction of the device's bound: the workload's model FLOPs at the
backend's measured matmul rate, or the weights its longest output's decode steps must read at the
measured memory bandwidth, whichever takes longer. Random workloads sample at temperature ${RANDOM_TEMPERATURE}, as vLLM's do. Writes JSON
to ./bench-results/ (or --output).

  --workload nano-vllm           nano-vllm's bench.py: ${NANO_VLLM_WORKLOAD.numPrompts} sequences, input and output ${NANO_VLLM_WORKLOAD.inputLen.min}..${NANO_VLLM_WORKLOAD.inputLen.max}
                                 tokens each, temperature ${NANO_VLLM_WORKLOAD.temperature} (instead of the dataset flags)
  --num-iters N                  measured runs (default 1), each over fresh token ids of the same
                                 lengths; with N > 1 the result is the median run's, with every
                                 run's output tokens/s and their spread ((max - min) / median)
  --num-iters-warmup N           unmeasured runs first (default 0)
  --output FILE                  where to write the JSON result
${STEP_TIMELINE_HELP}
  --lora-adapters N              run the requests with N LoRA adapters, round robin, all in the batch
                                 together (random weights on every projection, paged onto the GPU
                                 before timing; enables LoRA with --max-loras N unless given); 0, the
                                 default, runs the base model
  --lora-rank R                  those adapters' rank (default ${DEFAULT_LORA_RANK})
${SYNTHETIC_ACCEPTANCE_HELP}

Sampling beyond the temperature, to measure what it costs (default: none):
  --top-p P  --top-k K  --min-p P
  --repetition-penalty R  --presence-penalty P  --frequency-penalty F
  --logprobs N                   the top-N logprobs of each generated token

${DATASET_FLAGS_HELP}

${ENGINE_FLAGS_HELP}`;

export async function throughputCommand(argv: string[]): Promise<void> {
  const { values } = parseFlags('keel bench throughput', {
    args: argv,
    options: {
      ...ENGINE_FLAGS,
      ...DATASET_FLAGS,
      ...BENCH_SAMPLING_FLAGS,
      workload: { type: 'string' },
      'num-iters': { type: 'string' },
      'num-iters-warmup': { type: 'string' },
      output: { type: 'string' },
      'step-timeline': { type: 'string' },
      'lora-adapters': { type: 'string' },
      'lora-rank': { type: 'string' },
      'synthetic-accepted-drafts': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(THROUGHPUT_HELP);
    return;
  }
  const workload = workloadFromFlags(values, values.workload, RANDOM_TEMPERATURE);
  const sampling = { ...samplingParamsFromFlags(values), temperature: workload.temperature };
  const numIters = positiveIntFlag('--num-iters', values['num-iters'], 1);
  const numItersWarmup = nonNegativeIntFlag('--num-iters-warmup', values['num-iters-warmup'], 0);
  if (workload.kind === 'custom' && numItersWarmup + numIters > 1 && !values['no-prefix-caching']) {
    throw invalidArgument("more than one run repeats a custom dataset's prompts, which the prefix cache would serve: add --no-prefix-caching");
  }
  const numAdapters = nonNegativeIntFlag('--lora-adapters', values['lora-adapters'], 0);
  const loraRank = positiveIntFlag('--lora-rank', values['lora-rank'], DEFAULT_LORA_RANK);
  const engine = withSyntheticAcceptance(engineConfigFromFlags(values), values['synthetic-accepted-drafts']);
  const lora = numAdapters === 0 ? {} : { enableLora: true, maxLoras: engine.maxLoras ?? numAdapters, maxLoraRank: Math.max(engine.maxLoraRank ?? 0, loraRank) };
  const bench = await loadBenchEngine({ ...engine, ...lora }, { bandwidth: true, matmul: true });
  const { llm, facts } = bench;
  const adapterDir = numAdapters === 0 ? null : mkdtempSync(join(tmpdir(), 'keel-bench-lora-'));
  try {
    // One random adapter, served under N names: N adapters as the device sees them (a slot each).
    const adapters = Array.from({ length: numAdapters }, (_, i) => `bench-lora-${i}`);
    if (adapterDir !== null) {
      writeRandomLoraAdapter(adapterDir, llm.model.loraTargets?.() ?? [], loraRank, llm.config.seed);
      for (const name of adapters) llm.loadLoraAdapter(name, adapterDir);
      // Paged onto the device before the clock starts (a one-token request each): the run measures
      // serving them, not loading them (with --max-loras below N it pages during the run too).
      await Promise.all(adapters.map((name) => llm.generate([[0]], { maxTokens: 1 }, { lora: name })));
    }
    const requestsOf = (run: number) => workloadRequests(workload, llm.modelConfig.vocabSize, llm.config.seed, llm.tokenizer, run);
    const numRequests = workload.numPrompts;
    console.log(`keel bench throughput: ${llm.config.model} on ${facts.backend} (${facts.deviceName}), workload ${workload.name}, ${numRequests} requests × ${numItersWarmup + numIters} runs`);
    // The run is dated and attributed to a commit when it starts.
    const header = keelRunHeader(bench);
    const progress = benchProgress('requests', numRequests * (numItersWarmup + numIters), 'done', llm.config.showProgress);
    const runs: ThroughputResults[] = [];
    const timelineFile = values['step-timeline'];
    const steps: { run: number; record: StepRecord }[] = [];
    for (let run = 0; run < numItersWarmup + numIters; run++) {
      const measured = run - numItersWarmup;
      const results = await runThroughputSuite(
        llm,
        workload.name,
        requestsOf(run),
        sampling,
        {
          ...rooflineInputs(bench),
          flopsPerSecond: facts.matmulFlopsPerSecond,
          bandwidthBytesPerSecond: facts.bandwidth?.bytesPerSecond ?? null,
        },
        () => progress.tick(),
        (i) => (numAdapters === 0 ? undefined : adapters[i % numAdapters]),
        timelineFile === undefined || measured < 0 ? null : { file: timelineFile, onStep: (record) => steps.push({ run: measured, record }) },
      );
      if (measured >= 0) runs.push(results);
    }
    progress.stop();
    const results = medianRun(runs);
    console.log(throughputReport(results));
    if (timelineFile !== undefined) {
      writeStepTimeline(timelineFile, steps.map(({ run, record }) => stepTimelineLine(record, { run })));
      console.log(stepTimelineReport(results.step_timeline!));
    }
    const path = writeResult(
      {
        suite: 'throughput',
        schema_version: RESULT_SCHEMA_VERSION,
        status: 'ok',
        error: null,
        ...header,
        config: {
          ...workloadConfig(workload),
          num_iters: numIters,
          num_iters_warmup: numItersWarmup,
          ...samplingConfig(sampling),
          seed: llm.config.seed,
          lora_adapters: numAdapters,
          lora_rank: numAdapters === 0 ? null : loraRank,
          synthetic_accepted_drafts: engine.speculative?.syntheticAcceptedDrafts ?? null,
          engine: engineSettings(llm),
        },
        results,
      },
      values.output,
    );
    console.log(`wrote ${path}`);
  } finally {
    await llm.close();
    if (adapterDir !== null) rmSync(adapterDir, { recursive: true, force: true });
  }
}

/** One run's results as they are; of several, the median run's (by output tokens/s) with every run's rate and their spread. */
function medianRun(runs: ThroughputResults[]): ThroughputResults {
  if (runs.length === 1) return runs[0];
  const rates = runs.map((r) => r.output_tokens_per_s);
  const sorted = [...runs].sort((a, b) => a.output_tokens_per_s - b.output_tokens_per_s);
  // The lower middle of an even count: a run that happened, not an average of two.
  const median = sorted[Math.floor((sorted.length - 1) / 2)];
  const [min, max] = [Math.min(...rates), Math.max(...rates)];
  return {
    ...median,
    repeats: {
      output_tokens_per_s: rates,
      median_output_tokens_per_s: median.output_tokens_per_s,
      min_output_tokens_per_s: min,
      max_output_tokens_per_s: max,
      relative_spread: (max - min) / median.output_tokens_per_s,
    },
  };
}
