import { HOST_PHASES, STEP_KINDS, stepKind, type HostPhase, type StepKind, type StepRecord } from '../engine/step-timeline.ts';
import type { StepKindFigures, StepTimelineSummary } from './result-schema.ts';
import { percentile } from './statistics.ts';

/** Device milliseconds of a step's parts together; 0 for one that launched nothing. */
export function deviceBusyMs(record: StepRecord): number {
  const d = record.device;
  return d === null ? 0 : d.prepareMs + d.forwardMs + d.samplingMs;
}

/** Host milliseconds of a step() call outside waits for the device. */
export function hostWorkMs(record: StepRecord): number {
  let work = 0;
  for (const phase of HOST_PHASES) if (phase !== 'wait') work += record.host[phase];
  return work;
}

const sum = (values: readonly number[]) => values.reduce((t, v) => t + v, 0);
const fraction = (part: number, whole: number) => (whole > 0 ? part / whole : null);

/**
 * The step timeline's summary (StepTimelineSchema) of `records`, one per step() call in order,
 * written to `file`: where the wall time went on the device and on the host.
 */
export function summarizeStepTimeline(records: readonly StepRecord[], file: string): StepTimelineSummary {
  const launched = records.filter((r) => r.device !== null);
  const gaps = launched.flatMap((r) => (r.device!.gapBeforeMs === null ? [] : [r.device!.gapBeforeMs]));
  const deviceSum = (part: 'prepareMs' | 'forwardMs' | 'samplingMs') => sum(launched.map((r) => r.device![part]));
  const busy = sum(launched.map(deviceBusyMs));
  const wall = records.length === 0 ? 0 : records[records.length - 1].hostEndMs - records[0].hostStartMs;
  const excess = records.map((r) => hostWorkMs(r) - deviceBusyMs(r));
  return {
    file,
    steps: records.length,
    launched_steps: launched.length,
    wall_ms: wall,
    device_busy_ms: busy,
    device_busy_fraction: fraction(busy, wall),
    device_idle_ms: sum(gaps),
    median_gap_ms: gaps.length === 0 ? null : percentile(gaps, 50),
    max_gap_ms: gaps.length === 0 ? null : Math.max(...gaps),
    prepare_ms: deviceSum('prepareMs'),
    forward_ms: deviceSum('forwardMs'),
    sampling_ms: deviceSum('samplingMs'),
    forward_fraction: fraction(deviceSum('forwardMs'), busy),
    sampling_fraction: fraction(deviceSum('samplingMs'), busy),
    by_kind: STEP_KINDS.flatMap((kind) => {
      const chosen = records.filter((r) => stepKind(r) === kind);
      return chosen.length === 0 ? [] : [kindFigures(kind, chosen)];
    }),
    host_ms: Object.fromEntries(HOST_PHASES.map((p) => [p, sum(records.map((r) => r.host[p]))])) as Record<HostPhase, number>,
    host_work_ms: sum(records.map(hostWorkMs)),
    host_critical_ms: sum(excess.map((e) => Math.max(0, e))),
    host_bound_steps: excess.filter((e) => e > 0).length,
  };
}

function kindFigures(kind: StepKind, records: readonly StepRecord[]): StepKindFigures {
  const total = (key: keyof StepRecord['composition']) => sum(records.map((r) => r.composition[key]));
  const device = sum(records.map(deviceBusyMs));
  const tokens = total('prefillTokens') + total('decodeRows') + total('verifyTokens');
  return {
    kind,
    steps: records.length,
    prefill_tokens: total('prefillTokens'),
    decode_rows: total('decodeRows'),
    verify_tokens: total('verifyTokens'),
    mean_batch_size: total('batchSize') / records.length,
    device_ms: device,
    forward_ms: sum(records.map((r) => r.device?.forwardMs ?? 0)),
    sampling_ms: sum(records.map((r) => r.device?.samplingMs ?? 0)),
    device_ms_per_token: tokens === 0 ? null : device / tokens,
    host_work_ms: sum(records.map(hostWorkMs)),
  };
}
