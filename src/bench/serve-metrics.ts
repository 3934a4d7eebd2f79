import type { CompletionTiming } from './completion-client.ts';
import type { ServeResults } from './result-schema.ts';
import { flatSummary, summarize } from './statistics.ts';

const MAX_ERRORS_KEPT = 5;

/**
 * `vllm bench serve`'s figures from per-request timings: completed requests only; TPOT per request
 * is (e2e - TTFT) / (output tokens - 1) for requests with more than one token; ITL pools every
 * gap between chunks of every request; throughputs are totals over the benchmark's duration.
 */
export function serveMetrics(timings: CompletionTiming[], durationS: number, tokenTiming: ServeResults['token_timing']): ServeResults {
  const completed = timings.filter((t) => t.ok);
  const failed = timings.filter((t) => !t.ok);
  const inputTokens = completed.reduce((n, t) => n + t.promptTokens, 0);
  const outputTokens = completed.reduce((n, t) => n + t.outputTokens, 0);
  const tpots = completed.filter((t) => t.outputTokens > 1 && t.ttftMs !== null).map((t) => (t.e2eMs - (t.ttftMs as number)) / (t.outputTokens - 1));
  return {
    duration_s: durationS,
    completed: completed.length,
    failed: failed.length,
    total_input_tokens: inputTokens,
    total_output_tokens: outputTokens,
    request_throughput: completed.length / durationS,
    output_throughput: outputTokens / durationS,
    total_token_throughput: (inputTokens + outputTokens) / durationS,
    token_timing: tokenTiming,
    ...flatSummary('ttft_ms', summarize(completed.flatMap((t) => (t.ttftMs === null ? [] : [t.ttftMs])))),
    ...flatSummary('tpot_ms', summarize(tpots)),
    ...flatSummary('itl_ms', summarize(completed.flatMap((t) => t.itlMs))),
    ...flatSummary('e2el_ms', summarize(completed.map((t) => t.e2eMs))),
    errors: [...new Set(failed.map((t) => t.error ?? 'unknown error'))].slice(0, MAX_ERRORS_KEPT),
  };
}
