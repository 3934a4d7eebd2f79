import type { LLM } from '../engine/llm.ts';
import type { StepRecord } from '../engine/step-timeline.ts';
import type { StepTimelineSummary } from './result-schema.ts';
import { summarizeStepTimeline } from './step-timeline-summary.ts';

/** Where a measured run's step timeline goes (--step-timeline): each step's record, and the file the summary names. */
export interface StepTimelineSink {
  file: string;
  onStep: (record: StepRecord) => void;
}

/**
 * Runs `measured` with the engine's step timeline recording into `sink`, and returns its result
 * with the steps' summary; without a sink, just runs it (no timeline, no summary).
 */
export async function withStepTimeline<T>(llm: LLM, sink: StepTimelineSink | null, measured: () => Promise<T>): Promise<{ value: T; timeline: StepTimelineSummary | null }> {
  if (sink === null) return { value: await measured(), timeline: null };
  const steps: StepRecord[] = [];
  llm.startStepTimeline((record) => {
    steps.push(record);
    sink.onStep(record);
  });
  try {
    const value = await measured();
    llm.stopStepTimeline();
    return { value, timeline: summarizeStepTimeline(steps, sink.file) };
  } catch (error) {
    llm.stopStepTimeline();
    throw error;
  }
}
