import type { LLM } from '../engine/llm.ts';
import { invalidArgument } from '../errors.ts';
import type { StructuredOutput } from '../sampling/structured-output.ts';
import { randomRequests } from './random-dataset.ts';
import type { LatencyBatch } from './result-schema.ts';
import { decodeRoofline, offloadBound, type RooflineInputs } from './roofline.ts';
import { speculationFigures } from './speculation-figures.ts';
import { withStepTimeline, type StepTimelineSink } from './step-timeline-run.ts';
import { flatSummary, mean, summarize } from './statistics.ts';

export interface LatencyOptions {
  batchSizes: number[];
  inputLen: number;
  outputLen: number;
  numIters: number;
  numItersWarmup: number;
  seed: number;
  /** Bytes per second the roofline fraction is taken of; null leaves the fraction unknown. */
  bandwidthBytesPerSecond: number | null;
  /** Every request constrained by this (structured output's overhead); null: free text. */
  structuredOutput: StructuredOutput | null;
  /** With weight offload: the bytes a step copies from host memory, and the rate they copy at (null: unknown); null without. */
  offload?: { hostBytesPerStep: number; hostToDeviceBytesPerSecond: number | null } | null;
}

/** One batch run: when its last sequence got its first token, and when its last sequence finished. */
export interface BatchTiming {
  ttftMs: number;
  e2eMs: number;
}

/**
 * `keel bench latency`: for each batch size, `batch` random prompts of `inputLen` tokens start
 * together and each generates exactly `outputLen` tokens greedily (EOS ignored). Each iteration
 * draws fresh prompts, so the prefix cache never serves one. TTFT is the time until every
 * sequence of the batch has its first token (the batch's prefill); TPOT the mean time per token
 * after it, (e2e - TTFT) / (outputLen - 1): one decode step of the whole batch.
 */
export interface LatencyHooks {
  /** A batch size's runs (warm-up and measured) start. */
  onBatchStart?(batchSize: number, runs: number): void;
  /** One run of the batch is done. */
  onRun?(): void;
  /** A batch size's figures. */
  onBatch?(row: LatencyBatch): void;
}

/** With `timeline`, each batch size's measured iterations, back to back, are recorded as one step timeline. */
export async function runLatencySuite(
  llm: LLM,
  options: LatencyOptions,
  roofline: RooflineInputs,
  hooks: LatencyHooks = {},
  timeline: StepTimelineSink | null = null,
): Promise<LatencyBatch[]> {
  checkOptions(llm, options);
  const rows: LatencyBatch[] = [];
  let seed = options.seed;
  for (const batchSize of options.batchSizes) {
    const promptsForIteration = () =>
      randomRequests({
        numPrompts: batchSize,
        inputLen: { min: options.inputLen, max: options.inputLen },
        outputLen: { min: options.outputLen, max: options.outputLen },
        vocabSize: llm.modelConfig.vocabSize,
        seed: seed++,
      }).map((r) => r.promptTokenIds);
    hooks.onBatchStart?.(batchSize, options.numItersWarmup + options.numIters);
    for (let i = 0; i < options.numItersWarmup; i++) {
      await timeBatch(llm, promptsForIteration(), options.outputLen, options.structuredOutput);
      hooks.onRun?.();
    }
    const before = llm.stats();
    const { value: timings, timeline: steps } = await withStepTimeline(llm, timeline, async () => {
      const measured: BatchTiming[] = [];
      for (let i = 0; i < options.numIters; i++) {
        measured.push(await timeBatch(llm, promptsForIteration(), options.outputLen, options.structuredOutput));
        hooks.onRun?.();
      }
      return measured;
    });
    const after = llm.stats();
    const row = {
      ...latencyRow(batchSize, options, timings, roofline, { preemptions: after.numPreemptionsTotal - before.numPreemptionsTotal, swaps: after.numSwapsTotal - before.numSwapsTotal }),
      speculation: speculationFigures(before.speculation, after.speculation),
      ...(steps === null ? {} : { step_timeline: steps }),
    };
    rows.push(row);
    hooks.onBatch?.(row);
  }
  return rows;
}

/**
 * Runs one batch through the engine and times it from submission. A structured output's grammar
 * is compiled in the warm-up runs (it is cached), so measured runs time the masks alone; a grammar
 * that completes before outputLen allows only EOS after it, which the run ignores.
 */
async function timeBatch(llm: LLM, prompts: number[][], outputLen: number, structuredOutput: StructuredOutput | null): Promise<BatchTiming> {
  const params = { temperature: 0, maxTokens: outputLen, ignoreEos: true, structuredOutput };
  const start = performance.now();
  let lastFirstToken = start;
  // Every stream adds its request before the engine's next step, so all of them share one batch.
  await Promise.all(
    prompts.map(async (prompt) => {
      let gotFirst = false;
      for await (const update of llm.stream(prompt, params)) {
        if (!gotFirst && update.output.outputs[0].tokenIds.length > 0) {
          gotFirst = true;
          lastFirstToken = Math.max(lastFirstToken, performance.now());
        }
        if (update.finished && update.output.outputs[0].tokenIds.length !== outputLen) {
          throw new Error(`a latency run produced ${update.output.outputs[0].tokenIds.length} tokens instead of ${outputLen}`);
        }
      }
    }),
  );
  return { ttftMs: lastFirstToken - start, e2eMs: performance.now() - start };
}

export function latencyRow(batchSize: number, options: LatencyOptions, timings: BatchTiming[], roofline: RooflineInputs, preempted: { preemptions: number; swaps: number } | null): LatencyBatch {
  const tpots = timings.map((t) => (t.e2eMs - t.ttftMs) / (options.outputLen - 1));
  const meanTpotMs = mean(tpots);
  const meanE2eMs = mean(timings.map((t) => t.e2eMs));
  return {
    batch_size: batchSize,
    input_len: options.inputLen,
    output_len: options.outputLen,
    num_iters: timings.length,
    ...flatSummary('ttft_ms', summarize(timings.map((t) => t.ttftMs))),
    ...flatSummary('tpot_ms', summarize(tpots)),
    ...flatSummary('e2el_ms', summarize(timings.map((t) => t.e2eMs))),
    output_tokens_per_s: (batchSize * options.outputLen) / (meanE2eMs / 1000),
    decode_tokens_per_s: meanTpotMs > 0 ? batchSize / (meanTpotMs / 1000) : null,
    roofline:
      meanTpotMs > 0
        ? decodeRoofline(roofline, { batchSize, inputLen: options.inputLen, outputLen: options.outputLen, stepSeconds: meanTpotMs / 1000 }, options.bandwidthBytesPerSecond)
        : null,
    offload: options.offload && meanTpotMs > 0 ? offloadBound(options.offload.hostBytesPerStep, options.offload.hostToDeviceBytesPerSecond, meanTpotMs / 1000) : null,
    preemptions: preempted?.preemptions ?? null,
    swaps: preempted?.swaps ?? null,
  };
}

function checkOptions(llm: LLM, options: LatencyOptions): void {
  const positive = (flag: string, v: number) => {
    if (!Number.isInteger(v) || v < 1) throw invalidArgument(`${flag} must be a positive integer (got ${v})`);
  };
  if (options.batchSizes.length === 0) throw invalidArgument('--batch-size needs at least one batch size');
  for (const b of options.batchSizes) positive('--batch-size', b);
  positive('--input-len', options.inputLen);
  positive('--num-iters', options.numIters);
  if (!Number.isInteger(options.numItersWarmup) || options.numItersWarmup < 0) {
    throw invalidArgument(`--num-iters-warmup must be a non-negative integer (got ${options.numItersWarmup})`);
  }
  if (!Number.isInteger(options.outputLen) || options.outputLen < 2) {
    throw invalidArgument(`--output-len must be at least 2: time per output token is measured after the first (got ${options.outputLen})`);
  }
  const largest = Math.max(...options.batchSizes);
  if (largest > llm.config.maxNumSeqs) {
    throw invalidArgument(`--batch-size ${largest} is more than --max-num-seqs ${llm.config.maxNumSeqs}: the batch would not run as one; raise --max-num-seqs`);
  }
  if (options.inputLen + options.outputLen > llm.maxModelLen) {
    throw invalidArgument(`--input-len ${options.inputLen} + --output-len ${options.outputLen} is more than the model's context here (${llm.maxModelLen} tokens)`);
  }
}
