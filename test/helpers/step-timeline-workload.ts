import type { Backend } from '../../src/backend/backend.ts';
import type { LLM } from '../../src/engine/llm.ts';
import type { LLMEngine } from '../../src/engine/llm-engine.ts';
import type { RequestOutput } from '../../src/engine/outputs.ts';

/** Prompts of 20 to 40 token ids and as many outputs of 3 to 9 tokens: the step timeline tests' workload. */
export const PROMPTS = Array.from({ length: 6 }, (_, i) => Array.from({ length: 20 + 4 * i }, (_, t) => (7 * t + 13 * i) % 200));
export const OUTPUT_LENS = [3, 9, 5, 4, 8, 6];

/** The workload, greedy, EOS ignored, all requests in one batch. */
export const generateAll = (llm: LLM): Promise<RequestOutput[][]> =>
  Promise.all(PROMPTS.map((p, i) => llm.generate([p], { temperature: 0, maxTokens: OUTPUT_LENS[i], ignoreEos: true })));

/** Counts the engine's step() calls and the backend's time marks while `run` runs (the parts reached at run time, as a profiler would). */
export async function countingSteps<T>(llm: LLM, run: () => Promise<T>): Promise<{ value: T; steps: number; marks: number }> {
  const { engine, backend } = (llm as unknown as { loaded: { engine: LLMEngine; backend: Backend } }).loaded;
  const [step, markTime] = [engine.step, backend.markTime];
  const counts = { steps: 0, marks: 0 };
  engine.step = function (this: LLMEngine) {
    counts.steps++;
    return step.call(this);
  };
  backend.markTime = function (this: Backend) {
    counts.marks++;
    return markTime.call(this);
  };
  try {
    return { value: await run(), ...counts };
  } finally {
    engine.step = step;
    backend.markTime = markTime;
  }
}
