import { invalidArgument } from '../errors.ts';
import { readResult } from './result-file.ts';
import type { LatencyBatch } from './result-schema.ts';

/**
 * A latency result to compare with (`keel bench latency --baseline FILE`): typically the same
 * model and flags without speculative decoding. Returns each batch size's mean TPOT there.
 */
export function readLatencyBaseline(path: string): Map<number, number> {
  const result = readResult(path);
  if (result.suite !== 'latency' || result.results === null) throw invalidArgument(`--baseline ${path} is not a successful latency result (suite ${result.suite}, status ${result.status})`);
  return new Map(result.results.batches.flatMap((row) => (row.mean_tpot_ms === null ? [] : [[row.batch_size, row.mean_tpot_ms]])));
}

/** The row with its decode speedup over the baseline: the baseline's mean TPOT at its batch size over its own. */
export function withSpeedup(row: LatencyBatch, baseline: Map<number, number>): LatencyBatch {
  const before = baseline.get(row.batch_size);
  const tpot = row.mean_tpot_ms;
  return { ...row, speedup_vs_baseline: before === undefined || tpot === null || !(tpot > 0) ? null : before / tpot };
}
