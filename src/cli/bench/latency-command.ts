import { ENGINE_FLAGS, ENGINE_FLAGS_HELP, engineConfigFromFlags, numberFlag } from '../engine-flags.ts';
import { invalidArgument } from '../../errors.ts';
import { latencyLine, stepTimelineReport } from '../../bench/console-report.ts';
import { STEP_TIMELINE_HELP, writeStepTimeline } from '../../bench/step-timeline-file.ts';
import { stepTimelineLine } from '../../engine/step-timeline-file.ts';
import type { StepRecord } from '../../engine/step-timeline.ts';
import { engineSettings, keelRunHeader, loadBenchEngine, rooflineInputs, type BenchEngine } from '../../bench/keel-run.ts';
import { readLatencyBaseline, withSpeedup } from '../../bench/latency-baseline.ts';
import { runLatencySuite, type LatencyOptions } from '../../bench/latency-suite.ts';
import { benchProgress, type Progress } from '../../bench/progress.ts';
import { writeResult } from '../../bench/result-file.ts';
import { RESULT_SCHEMA_VERSION } from '../../bench/result-schema.ts';
import { nonNegativeIntFlag, positiveIntFlag, positiveIntList, SYNTHETIC_ACCEPTANCE_HELP, withSyntheticAcceptance } from './bench-flags.ts';
import { parseFlags } from '../parse-flags.ts';
import { structuredOutputFromFlags } from '../structured-output-flags.ts';

/** vLLM's `bench latency` defaults. */
const DEFAULTS = { batchSize: '8', inputLen: 32, outputLen: 128, numIters: 30, numItersWarmup: 10 };

export const LATENCY_HELP = `Usage: keel bench latency [options]

For each batch size, starts that many random token-id prompts together and generates exactly
--output-len tokens each (greedy, EOS ignored), --num-iters times after --num-iters-warmup
unmeasured runs. Reports TTFT (until every sequence has its first token), TPOT (time per output
token after the first), end-to-end latency, output tokens/s, and the fraction of the memory
roofline a decode step reached: (weights + KV read per step) / step time / memory bandwidth;
with --cpu-offload-gb, also the fraction of the bound of copying the offloaded layers every step
(offloaded bytes / the measured pinned host-to-device bandwidth: PCIe).
Writes JSON to ./bench-results/ (or --output).

  --batch-size 1,2,4             batch sizes to measure (default ${DEFAULTS.batchSize})
  --input-len N                  prompt tokens (default ${DEFAULTS.inputLen})
  --output-len N                 tokens to generate, at least 2 (default ${DEFAULTS.outputLen})
  --num-iters N                  measured runs per batch size (default ${DEFAULTS.numIters})
  --num-iters-warmup N           unmeasured runs first (default ${DEFAULTS.numItersWarmup})
  --bandwidth-gbps GB/S          memory bandwidth for the roofline, in GB/s (default: measured by
                                 the backend if it can; the CPU backend times a host memory copy)
  --json-schema FILE             constrain every request by the JSON schema in FILE (structured
                                 output's overhead: compare TPOT with a run without it; the
                                 model needs a tokenizer.json)
  --baseline FILE                a latency result to compare with (the same model and flags
                                 without speculative decoding): each batch size also reports its
                                 speedup, the baseline's mean TPOT over this run's
  --output FILE                  where to write the JSON result
${STEP_TIMELINE_HELP}
${SYNTHETIC_ACCEPTANCE_HELP}

${ENGINE_FLAGS_HELP}`;

export async function latencyCommand(argv: string[]): Promise<void> {
  const { values } = parseFlags('keel bench latency', {
    args: argv,
    options: {
      ...ENGINE_FLAGS,
      'batch-size': { type: 'string' },
      'input-len': { type: 'string' },
      'output-len': { type: 'string' },
      'num-iters': { type: 'string' },
      'num-iters-warmup': { type: 'string' },
      'bandwidth-gbps': { type: 'string' },
      'json-schema': { type: 'string' },
      baseline: { type: 'string' },
      'synthetic-accepted-drafts': { type: 'string' },
      output: { type: 'string' },
      'step-timeline': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(LATENCY_HELP);
    return;
  }
  const bandwidthGbps = numberFlag('--bandwidth-gbps', values['bandwidth-gbps']);
  if (bandwidthGbps !== undefined && !(bandwidthGbps > 0)) throw invalidArgument(`--bandwidth-gbps must be positive (got ${bandwidthGbps})`);
  const engineConfig = withSyntheticAcceptance(engineConfigFromFlags(values), values['synthetic-accepted-drafts']);
  const flags: LatencyFlags = {
    batchSizes: positiveIntList('--batch-size', values['batch-size'] ?? DEFAULTS.batchSize),
    inputLen: positiveIntFlag('--input-len', values['input-len'], DEFAULTS.inputLen),
    outputLen: positiveIntFlag('--output-len', values['output-len'], DEFAULTS.outputLen),
    numIters: positiveIntFlag('--num-iters', values['num-iters'], DEFAULTS.numIters),
    numItersWarmup: nonNegativeIntFlag('--num-iters-warmup', values['num-iters-warmup'], DEFAULTS.numItersWarmup),
    structuredOutput: structuredOutputFromFlags({ 'json-schema': values['json-schema'] }),
  };

  // Read before the model loads, so a bad file fails at once.
  const baseline = values.baseline === undefined ? null : { path: values.baseline, rows: readLatencyBaseline(values.baseline) };
  const bench = await loadBenchEngine(engineConfig, { bandwidth: true, gbps: bandwidthGbps, hostToDevice: (engineConfig.cpuOffloadGb ?? 0) > 0 });
  try {
    await benchLatency(bench, flags, { baseline, output: values.output, stepTimeline: values['step-timeline'] });
  } finally {
    await bench.llm.close();
  }
}

export type LatencyFlags = Pick<LatencyOptions, 'batchSizes' | 'inputLen' | 'outputLen' | 'numIters' | 'numItersWarmup' | 'structuredOutput'>;

/** Measures a loaded engine as `keel bench latency` does, prints a line per batch size and writes the result; returns its path. */
export async function benchLatency(
  bench: BenchEngine,
  flags: LatencyFlags,
  files: { baseline: { path: string; rows: ReturnType<typeof readLatencyBaseline> } | null; output: string | undefined; stepTimeline?: string },
): Promise<string> {
  const baseline = files.baseline?.rows ?? null;
  const { llm, facts } = bench;
  const offload = llm.weightOffload && { hostBytesPerStep: llm.weightOffload.hostBytes, hostToDeviceBytesPerSecond: facts.hostToDeviceBytesPerSecond };
  const options: LatencyOptions = { ...flags, seed: llm.config.seed, bandwidthBytesPerSecond: facts.bandwidth?.bytesPerSecond ?? null, offload };
  const bandwidth = facts.bandwidth ? `${(facts.bandwidth.bytesPerSecond / 1e9).toFixed(1)} GB/s (${facts.bandwidth.source})` : 'unknown (pass --bandwidth-gbps)';
  console.log(`keel bench latency: ${llm.config.model} on ${facts.backend} (${facts.deviceName}); memory bandwidth ${bandwidth}`);
  // The run is dated and attributed to a commit when it starts.
  const header = keelRunHeader(bench);
  let progress: Progress | null = null;
  let batchSize = 0;
  const steps: { batchSize: number; record: StepRecord }[] = [];
  const timelineFile = files.stepTimeline;
  const measured = await runLatencySuite(
    llm,
    options,
    rooflineInputs(bench),
    {
      onBatchStart: (size, runs) => {
        batchSize = size;
        progress = benchProgress(`batch ${size}`, runs, 'runs', llm.config.showProgress);
      },
      onRun: () => progress?.tick(),
      onBatch: (row) => {
        progress?.stop();
        console.log(latencyLine(baseline === null ? row : withSpeedup(row, baseline)));
        if (row.step_timeline) console.log(stepTimelineReport(row.step_timeline));
      },
    },
    timelineFile === undefined ? null : { file: timelineFile, onStep: (record) => steps.push({ batchSize, record }) },
  );
  if (timelineFile !== undefined) writeStepTimeline(timelineFile, steps.map(({ batchSize, record }) => stepTimelineLine(record, { latency_batch_size: batchSize })));
  const rows = baseline === null ? measured : measured.map((row) => withSpeedup(row, baseline));
  const path = writeResult(
    {
      suite: 'latency',
      schema_version: RESULT_SCHEMA_VERSION,
      status: 'ok',
      error: null,
      ...header,
      config: {
        batch_sizes: flags.batchSizes,
        input_len: flags.inputLen,
        output_len: flags.outputLen,
        num_iters: flags.numIters,
        num_iters_warmup: flags.numItersWarmup,
        seed: options.seed,
        temperature: 0,
        ignore_eos: true,
        structured_output: flags.structuredOutput,
        baseline: files.baseline?.path ?? null,
        synthetic_accepted_drafts: llm.config.speculative?.syntheticAcceptedDrafts ?? null,
        weight_element_bytes: facts.weightElementBytes,
        kv_element_bytes: facts.kvElementBytes,
        engine: engineSettings(llm),
      },
      results: { bandwidth_bytes_per_s: facts.bandwidth?.bytesPerSecond ?? null, bandwidth_source: facts.bandwidth?.source ?? null, batches: rows },
    },
    files.output,
  );
  console.log(`wrote ${path}`);
  return path;
}
