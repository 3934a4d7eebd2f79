import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { invalidArgument } from '../errors.ts';
import { HOST_PHASES, stepKind, type StepRecord } from './step-timeline.ts';

// The step timeline's JSONL file (`--step-timeline` of keel bench and keel serve,
// docs/benchmarks.md "Step timeline"): its line format and the file the lines go to.

/** Milliseconds to the 0.1 µs: the clocks' resolution, in a short line. */
const ms = (v: number) => Math.round(v * 1e4) / 1e4;

/**
 * One step of the timeline as a line of the --step-timeline JSONL file, snake_case as results
 * are; `run` names what it belongs to (a latency batch size, a throughput iteration, a server's
 * replica).
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

/** A step timeline's JSONL file, open for lines: created afresh, or appended to (`append`); its directory made if missing. */
export class StepTimelineFile {
  private fd: number | null;

  constructor(path: string, append = false) {
    try {
      mkdirSync(dirname(path), { recursive: true });
      this.fd = openSync(path, append ? 'a' : 'w');
    } catch (error) {
      throw invalidArgument(`cannot write the step timeline to ${path}: ${(error as Error).message}`);
    }
  }

  /** Writes `lines` through to the file, at once. */
  write(lines: readonly string[]): void {
    if (this.fd === null) throw new Error('the step timeline file is closed');
    if (lines.length > 0) writeSync(this.fd, `${lines.join('\n')}\n`);
  }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }
}
