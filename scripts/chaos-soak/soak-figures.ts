import type { HealthSample } from './health-probe.ts';

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

const round = (x: number, digits = 1) => Math.round(x * 10 ** digits) / 10 ** digits;

export interface HealthFigures {
  samples: number;
  /** Answers other than 200 (status 0: no answer), with when they were asked (s since `origin`, epoch ms). */
  failed: { at_s: number; status: number; ms: number }[];
  p50_ms: number;
  p99_ms: number;
  max_ms: number;
}

/** Latency of the /health answers (failed ones count as their time to fail). */
export function healthFigures(samples: HealthSample[], origin: number): HealthFigures {
  const sorted = samples.map((s) => s.ms).sort((a, b) => a - b);
  return {
    samples: samples.length,
    failed: samples.filter((s) => s.status !== 200).map((s) => ({ at_s: round((s.at - origin) / 1000), status: s.status, ms: round(s.ms) })),
    p50_ms: round(percentile(sorted, 50)),
    p99_ms: round(percentile(sorted, 99)),
    max_ms: round(sorted[sorted.length - 1] ?? Number.NaN),
  };
}

export function latencyFigures(ms: number[]): { count: number; p50_ms: number; p99_ms: number; max_ms: number } {
  const sorted = [...ms].sort((a, b) => a - b);
  return { count: sorted.length, p50_ms: round(percentile(sorted, 50), 0), p99_ms: round(percentile(sorted, 99), 0), max_ms: round(sorted[sorted.length - 1] ?? Number.NaN, 0) };
}

/** Outcome counts, violations first among the keys, and in all. */
export function tally(outcomes: Map<string, number>): { total: number; violations: number; by_outcome: Record<string, number> } {
  const entries = [...outcomes].sort(([a, x], [b, y]) => Number(b.startsWith('violation')) - Number(a.startsWith('violation')) || y - x);
  return {
    total: entries.reduce((sum, [, n]) => sum + n, 0),
    violations: entries.filter(([k]) => k.startsWith('violation')).reduce((sum, [, n]) => sum + n, 0),
    by_outcome: Object.fromEntries(entries),
  };
}

export { round };
