import assert from 'node:assert/strict';
import { test } from 'node:test';
import { HOST_PHASES, stepKind, type HostPhase, type StepComposition, type StepDeviceTimes, type StepRecord } from '../engine/step-timeline.ts';
import { summarizeStepTimeline } from './step-timeline-summary.ts';

/** A step() call of the given host phases (the rest 0), composition and device times. */
function step(index: number, start: number, end: number, host: Partial<Record<HostPhase, number>>, composition: Partial<StepComposition>, device: StepDeviceTimes | null): StepRecord {
  return {
    index,
    hostStartMs: start,
    hostEndMs: end,
    composition: { batchSize: 0, prefillTokens: 0, decodeRows: 0, verifyTokens: 0, ...composition },
    host: { ...(Object.fromEntries(HOST_PHASES.map((p) => [p, 0])) as Record<HostPhase, number>), ...host },
    device,
  };
}

// Four calls over 20 ms: a prefill of 2 × 100 tokens, two decode steps of batch 2 (the second
// with a prefill chunk of 50 tokens beside them: mixed), and a call that only read the last step.
const TIMELINE = [
  step(0, 0, 6, { schedule: 1, forward: 2, sample: 1, output: 2 }, { batchSize: 2, prefillTokens: 200 }, { startMs: 1, prepareMs: 0, forwardMs: 8, samplingMs: 1, gapBeforeMs: null }),
  step(1, 6, 10, { between: 0, schedule: 1, forward: 1, wait: 2 }, { batchSize: 2, decodeRows: 2 }, { startMs: 11, prepareMs: 0.5, forwardMs: 2, samplingMs: 0.5, gapBeforeMs: 1 }),
  step(2, 11, 17, { between: 1, schedule: 2, batch: 1, forward: 1, wait: 1, output: 1 }, { batchSize: 3, prefillTokens: 50, decodeRows: 2 }, { startMs: 16, prepareMs: 0, forwardMs: 3, samplingMs: 1, gapBeforeMs: 2 }),
  step(3, 18, 20, { between: 1, wait: 1, output: 1 }, {}, null),
];

test('step kinds: prefill, decode, mixed, verify, and drain for a call that launched nothing', () => {
  assert.deepEqual(TIMELINE.map(stepKind), ['prefill', 'decode', 'mixed', 'drain']);
  const device = { startMs: 0, prepareMs: 0, forwardMs: 1, samplingMs: 1, gapBeforeMs: null };
  assert.equal(stepKind(step(0, 0, 1, {}, { batchSize: 2, decodeRows: 1, verifyTokens: 4 }, device)), 'verify');
});

test('the summary of a constructed timeline: device busy and idle time, per kind, and the host beyond the device', () => {
  const s = summarizeStepTimeline(TIMELINE, 'steps.jsonl');
  assert.equal(s.file, 'steps.jsonl');
  assert.deepEqual([s.steps, s.launched_steps, s.wall_ms], [4, 3, 20]);
  // Busy: 9 + 3 + 4; idle: the gaps before steps 1 and 2.
  assert.equal(s.device_busy_ms, 16);
  assert.equal(s.device_busy_fraction, 16 / 20);
  assert.deepEqual([s.device_idle_ms, s.median_gap_ms, s.max_gap_ms], [3, 1.5, 2]);
  assert.deepEqual([s.prepare_ms, s.forward_ms, s.sampling_ms], [0.5, 13, 2.5]);
  assert.deepEqual([s.forward_fraction, s.sampling_fraction], [13 / 16, 2.5 / 16]);
  assert.deepEqual(s.host_ms, { schedule: 4, batch: 1, draws: 0, forward: 4, sample: 1, wait: 4, output: 4, between: 2 });
  assert.equal(s.host_work_ms, 16);
  // Host work per call 6, 2, 6, 2 against device 9, 3, 4, 0: calls 2 and 3 exceed it by 2 each.
  assert.deepEqual([s.host_critical_ms, s.host_bound_steps], [4, 2]);
  assert.deepEqual(s.by_kind, [
    { kind: 'prefill', steps: 1, prefill_tokens: 200, decode_rows: 0, verify_tokens: 0, mean_batch_size: 2, device_ms: 9, forward_ms: 8, sampling_ms: 1, device_ms_per_token: 9 / 200, host_work_ms: 6 },
    { kind: 'decode', steps: 1, prefill_tokens: 0, decode_rows: 2, verify_tokens: 0, mean_batch_size: 2, device_ms: 3, forward_ms: 2, sampling_ms: 0.5, device_ms_per_token: 1.5, host_work_ms: 2 },
    { kind: 'mixed', steps: 1, prefill_tokens: 50, decode_rows: 2, verify_tokens: 0, mean_batch_size: 3, device_ms: 4, forward_ms: 3, sampling_ms: 1, device_ms_per_token: 4 / 52, host_work_ms: 6 },
    { kind: 'drain', steps: 1, prefill_tokens: 0, decode_rows: 0, verify_tokens: 0, mean_batch_size: 0, device_ms: 0, forward_ms: 0, sampling_ms: 0, device_ms_per_token: null, host_work_ms: 2 },
  ]);
});

test('an empty timeline sums to zeros, with no fraction or gap to report', () => {
  const s = summarizeStepTimeline([], 'none.jsonl');
  assert.deepEqual([s.steps, s.wall_ms, s.device_busy_ms, s.device_busy_fraction, s.median_gap_ms, s.forward_fraction], [0, 0, 0, null, null, null]);
  assert.deepEqual(s.by_kind, []);
});
