import type { Backend, TimeMark } from '../backend/backend.ts';
import type { SchedulerOutput } from './scheduler.ts';

/**
 * Where an engine step's host time goes, exclusive phases in the order a step meets them:
 *   schedule  proposing drafts, the scheduler and KV-cache manager (schedule, onStepComplete,
 *             tokensRead), the step's host-device block transfers queued
 *   batch     the runner's batch description; block copies and drafting queued before it
 *   draws     the per-row sampling parameters (draws) the engine hands the runner
 *   forward   the batch's upload and the forward launched (kernels, or a graph replayed)
 *   sample    the sampling pass launched
 *   wait      waiting for a step's sampled tokens (the device still running it)
 *   output    reading the tokens: stop checks, detokenizer, request updates
 *   between   from the previous step's end to this one's start (the event loop: llm.generate's
 *             callbacks and promises, garbage collection)
 * On the CPU backend forward and sample hold the computation itself.
 */
export const HOST_PHASES = ['schedule', 'batch', 'draws', 'forward', 'sample', 'wait', 'output', 'between'] as const;
export type HostPhase = (typeof HOST_PHASES)[number];

/** What one step ran, from the scheduler's decision. */
export interface StepComposition {
  /** Sequences scheduled. */
  batchSize: number;
  /** Tokens of chunks computing known tokens: prompts, and those recomputed after a preemption. */
  prefillTokens: number;
  /** Sequences computing their newest token alone. */
  decodeRows: number;
  /** Tokens of sequences verifying drafts: each one's last sampled token and its drafts. */
  verifyTokens: number;
}

/**
 * The device's side of a step, in milliseconds of the backend's clock (Backend.markTime): the
 * device work queued before the target's forward (block copies, drafting, a draft model's forward),
 * the forward (with the batch's upload), and the sampling pass.
 */
export interface StepDeviceTimes {
  /** When the device reached the step, on the timeline's host clock: the first step's start is the host time it was queued at (the device idle then), each later one its predecessor's end plus the gap. */
  startMs: number;
  prepareMs: number;
  forwardMs: number;
  samplingMs: number;
  /** From the previous launched step's end to this one's start on the device: idle, or copies queued between steps (swaps); null for the first. */
  gapBeforeMs: number | null;
}

/** One `LLMEngine.step()` call: the step it launched, if any, and where its host time went. */
export interface StepRecord {
  /** 0, 1, ... in the order the calls ran. */
  index: number;
  /** The call's start and end, in ms of the host clock since the timeline started. */
  hostStartMs: number;
  hostEndMs: number;
  composition: StepComposition;
  /** Milliseconds per phase, HOST_PHASES each. */
  host: Record<HostPhase, number>;
  /** Null for a call that launched nothing (it only read a step left running). */
  device: StepDeviceTimes | null;
}

/** Steps by what they ran (stepKind). */
export const STEP_KINDS = ['prefill', 'decode', 'mixed', 'verify', 'drain'] as const;
export type StepKind = (typeof STEP_KINDS)[number];

/** A step by what it ran: any verification makes it verify; none launched, drain. */
export function stepKind(record: StepRecord): StepKind {
  const { prefillTokens, decodeRows, verifyTokens } = record.composition;
  if (record.device === null) return 'drain';
  if (verifyTokens > 0) return 'verify';
  if (decodeRows === 0) return 'prefill';
  return prefillTokens === 0 ? 'decode' : 'mixed';
}

/** A step recorded, its device marks not read yet: launch start, forward start and end, sampling end. */
interface PendingStep {
  record: StepRecord;
  marks: TimeMark[];
  /** Host time of the first mark. */
  launchHostMs: number;
}

/**
 * Steps read back before their device times are: a step's marks are read once two later calls have
 * ended, by which time work queued after them was read back (async scheduling keeps one step
 * running past its call), so reading them never waits for the device.
 */
const STEPS_UNREAD = 2;

/**
 * The step timeline (`--step-timeline`, docs/benchmarks.md): per engine step, its composition,
 * the host's phases on the wall clock, and the device time of its parts from marks on the
 * backend's queue, read a few steps late so that no step waits for them. The engine and model
 * runner call it at phase boundaries; without a timeline they make no such call.
 */
export class StepTimeline {
  private readonly backend: Backend;
  private readonly onStep: (record: StepRecord) => void;
  private readonly origin = performance.now();
  private phase: HostPhase = 'between';
  private phaseStart = this.origin;
  private current: PendingStep | null = null;
  private readonly pending: PendingStep[] = [];
  private nextIndex = 0;
  /** The latest step whose device times were read: its last mark, and its end on the timeline's clock. */
  private previous: { mark: TimeMark; endMs: number } | null = null;

  constructor(backend: Backend, onStep: (record: StepRecord) => void) {
    this.backend = backend;
    this.onStep = onStep;
  }

  /** A step() call starts: the time since the previous one ended was spent between steps. */
  beginStep(): void {
    const now = performance.now();
    const host = Object.fromEntries(HOST_PHASES.map((p) => [p, 0])) as Record<HostPhase, number>;
    // The first step's wait for the engine is no step's.
    if (this.nextIndex > 0) host.between = now - this.phaseStart;
    const composition = { batchSize: 0, prefillTokens: 0, decodeRows: 0, verifyTokens: 0 };
    const record: StepRecord = { index: this.nextIndex++, hostStartMs: now - this.origin, hostEndMs: 0, composition, host, device: null };
    this.current = { record, marks: [], launchHostMs: 0 };
    this.phase = 'schedule';
    this.phaseStart = now;
  }

  /** Switches the host phase; returns the one left, for a caller that returns to it. */
  enter(phase: HostPhase): HostPhase {
    const left = this.phase;
    const now = performance.now();
    if (this.current !== null) this.current.record.host[left] += now - this.phaseStart;
    this.phase = phase;
    this.phaseStart = now;
    return left;
  }

  /** What the scheduler gave the step. */
  scheduled(output: SchedulerOutput): void {
    const c = this.step().record.composition;
    c.batchSize = output.scheduled.length;
    for (const { seq, numNewTokens } of output.scheduled) {
      const start = seq.numComputedTokens;
      const last = start + numNewTokens === seq.numTokens;
      if (last && seq.numDraftTokens > 0 && numNewTokens === seq.numDraftTokens + 1) c.verifyTokens += numNewTokens;
      else if (last && numNewTokens === 1 && start >= seq.numPromptTokens) c.decodeRows++;
      else c.prefillTokens += numNewTokens;
    }
  }

  /**
   * The runner starts the step's device work. The launch time is read after the step's first mark
   * is queued, so that on a backend whose marks are the host clock (the CPU twin) the device times
   * anchored at it never start before their mark, however long queueing the first mark took.
   */
  launchStarts(): void {
    const step = this.step();
    step.marks.push(this.backend.markTime());
    step.launchHostMs = performance.now() - this.origin;
    this.enter('batch');
  }

  /** The runner asks the step's draws. */
  drawsStart(): void {
    this.enter('draws');
  }

  forwardStarts(): void {
    this.mark('forward');
  }

  forwardEnds(): void {
    this.mark('sample');
  }

  /** The sampling pass is queued: the step is launched. */
  sampled(): void {
    this.mark('output');
  }

  /** The step() call ends; the device times of steps far enough behind are read and those steps handed on, in order. */
  endStep(): void {
    const step = this.step();
    this.enter('between');
    step.record.hostEndMs = this.phaseStart - this.origin;
    if (step.marks.length !== 0 && step.marks.length !== 4) throw new Error(`step ${step.record.index} made ${step.marks.length} of its 4 time marks`);
    this.pending.push(step);
    this.current = null;
    while (this.pending.length > STEPS_UNREAD) this.resolve(this.pending.shift()!);
  }

  /** Reads every step still pending (waiting for the device if it must) and hands them on; a step that failed midway is left out. */
  finish(): void {
    this.current = null;
    for (const step of this.pending.splice(0)) this.resolve(step);
  }

  private step(): PendingStep {
    if (this.current === null) throw new Error('a step timeline call outside a step');
    return this.current;
  }

  private mark(next: HostPhase): void {
    this.step().marks.push(this.backend.markTime());
    this.enter(next);
  }

  private resolve(step: PendingStep): void {
    const [start, forwardStart, forwardEnd, sampledEnd] = step.marks;
    if (start !== undefined) {
      const elapsed = (a: TimeMark, b: TimeMark) => this.backend.elapsedMs(a, b);
      const gapBeforeMs = this.previous === null ? null : elapsed(this.previous.mark, start);
      const startMs = this.previous === null || gapBeforeMs === null ? step.launchHostMs : this.previous.endMs + gapBeforeMs;
      const device = { startMs, prepareMs: elapsed(start, forwardStart), forwardMs: elapsed(forwardStart, forwardEnd), samplingMs: elapsed(forwardEnd, sampledEnd), gapBeforeMs };
      step.record.device = device;
      this.previous = { mark: sampledEnd, endMs: startMs + device.prepareMs + device.forwardMs + device.samplingMs };
    }
    this.onStep(step.record);
  }
}
