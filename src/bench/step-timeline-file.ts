import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { HOST_PHASES, type StepRecord } from '../engine/step-timeline.ts';
import { stepKind } from './step-timeline-summary.ts';

/** The --step-timeline flag of `keel bench throughput` and `keel bench latency`, as their help shows it. */
export const STEP_TIMELINE_HELP = `  --step-timeline FILE           record every engine step of the measured runs: a JSON line per
                                 step in FILE (its tokens, the host's phases, the device time of
                                 its forward and sampling pass from events on the stream) and a
                                 summary in the result (step_timeline: the device's busy and idle
                                 time, per step kind, the host's share); docs/benchmarks.md`;

/** Milliseconds to the 0.1 µs: the clocks' resolution, in a short line. */
const ms = (v: number) => Math.round(v * 1e4) / 1e4;

/**
 * One step of the timeline as a line of the --step-timeline JSONL file, snake_case as results
 * are; `run` names the run it belongs to (a latency batch size, a throughput iteration).
 */
export function stepTimelineLine(record: StepRecord, run: Record<string, number>): string {
  const { composition: c, device: d } = record;
  return JSON.stringify({
    ...run,
    step: record.index,
    kind: stepKind(record),
    batch_size: c.batchSize,
    prefill_tokens: c.prefillTokens,
    decode_rows: c.decodeRows,
    verify_tokens: c.verifyTokens,
    host_start_ms: ms(record.hostStartMs),
    host_end_ms: ms(record.hostEndMs),
    host_ms: Object.fromEntries(HOST_PHASES.map((p) => [p, ms(record.host[p])])),
    device:
      d === null
        ? null
        : {
            start_ms: ms(d.startMs),
            prepare_ms: ms(d.prepareMs),
            forward_ms: ms(d.forwardMs),
            sampling_ms: ms(d.samplingMs),
            gap_before_ms: d.gapBeforeMs === null ? null : ms(d.gapBeforeMs),
          },
  });
}

/** Writes the timeline's lines to `path` (its directory made if missing). */
export function writeStepTimeline(path: string, lines: readonly string[]): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, lines.length === 0 ? '' : `${lines.join('\n')}\n`);
}
