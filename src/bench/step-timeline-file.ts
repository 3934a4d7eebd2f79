import { StepTimelineFile } from '../engine/step-timeline-file.ts';

/** The --step-timeline flag of `keel bench throughput` and `keel bench latency`, as their help shows it. */
export const STEP_TIMELINE_HELP = `  --step-timeline FILE           record every engine step of the measured runs: a JSON line per
                                 step in FILE (its tokens, the host's phases, the device time of
                                 its forward and sampling pass from events on the stream) and a
                                 summary in the result (step_timeline: the device's busy and idle
                                 time, per step kind, the host's share); docs/benchmarks.md`;

/** Writes a benchmark's timeline to `path` once its measured runs are over, so that no write falls inside them. */
export function writeStepTimeline(path: string, lines: readonly string[]): void {
  const file = new StepTimelineFile(path);
  try {
    file.write(lines);
  } finally {
    file.close();
  }
}
