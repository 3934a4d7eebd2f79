/** The summary every benchmark reports for a distribution of timings, as `vllm bench serve` does. */
export interface Summary {
  mean: number;
  median: number;
  p90: number;
  p99: number;
}

export function mean(values: readonly number[]): number {
  if (values.length === 0) throw new RangeError('mean of no values');
  let sum = 0;
  for (const v of values) sum += v;
  return sum / values.length;
}

/**
 * The p-th percentile (0..100) with linear interpolation between the two nearest ranks: numpy's
 * default, which vLLM's benchmarks use, so our p99 means what theirs does.
 */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) throw new RangeError('percentile of no values');
  if (!(p >= 0 && p <= 100)) throw new RangeError(`percentile must be in [0, 100] (got ${p})`);
  const sorted = [...values].sort((a, b) => a - b);
  const rank = (p / 100) * (sorted.length - 1);
  const below = Math.floor(rank);
  const above = Math.min(below + 1, sorted.length - 1);
  return sorted[below] + (sorted[above] - sorted[below]) * (rank - below);
}

/** Mean, median, p90 and p99; null for no values (a run where nothing completed). */
export function summarize(values: readonly number[]): Summary | null {
  if (values.length === 0) return null;
  return { mean: mean(values), median: percentile(values, 50), p90: percentile(values, 90), p99: percentile(values, 99) };
}

/** `{mean_ttft_ms, median_ttft_ms, p90_ttft_ms, p99_ttft_ms}` for metric "ttft_ms": vLLM's flat result keys. */
export function flatSummary<M extends string>(metric: M, summary: Summary | null): Record<`${keyof Summary}_${M}`, number | null> {
  const keys = ['mean', 'median', 'p90', 'p99'] as const;
  return Object.fromEntries(keys.map((k) => [`${k}_${metric}`, summary ? summary[k] : null])) as Record<`${keyof Summary}_${M}`, number | null>;
}
