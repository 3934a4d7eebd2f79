import type { EngineOptions } from '../../src/config.ts';
import { loadEngine } from '../../src/engine/load-engine.ts';
import { resolveSamplingParams } from '../../src/sampling/validate.ts';
import type { SamplingParams } from '../../src/sampling/sampling-params.ts';

/** One engine step as the host saw it: the sampling passes it launched, and how often it waited to read one. */
export interface StepWaits {
  passes: number;
  /** Reads that came after a pass was launched (several reads in a row are one wait): each a host round trip. */
  waits: number;
  /** Tokens the step's forwards read on the device from the pass before them (tokenSources). */
  deviceTokens: number;
}

/**
 * Runs `requests` (token-id prompts) to the end on an engine loaded with `options` (the CPU
 * backend, no async scheduling), and reports each step's sampling passes and host waits: how
 * many round trips between device and host a step of speculative drafting costs.
 */
export async function hostWaitsPerStep(options: EngineOptions, requests: { prompt: number[]; params: Partial<SamplingParams> }[]): Promise<StepWaits[]> {
  const { engine, backend } = await loadEngine({ backend: 'cpu', showProgress: false, asyncScheduling: false, ...options });
  try {
    let events: ('sample' | 'read')[] = [];
    let deviceTokens = 0;
    const sampleRows = backend.sampleRows.bind(backend);
    backend.sampleRows = (x, draws) => {
      events.push('sample');
      const sampled = sampleRows(x, draws);
      return { read: () => (events.push('read'), sampled.read()) };
    };
    // Reading EAGLE trees grown on the device is a wait too.
    const beginDraftTrees = backend.beginDraftTrees.bind(backend);
    backend.beginDraftTrees = (numTrees, size) => {
      const trees = beginDraftTrees(numTrees, size);
      const read = trees.read.bind(trees);
      trees.read = () => (events.push('read'), read());
      return trees;
    };
    const beginStep = backend.beginStep.bind(backend);
    backend.beginStep = (batch) => {
      deviceTokens += batch.tokenSources.filter((source) => source >= 0).length;
      return beginStep(batch);
    };
    requests.forEach(({ prompt, params }, i) =>
      engine.addRequest({ id: `r${i}`, prompt: null, promptTokenIds: prompt, params: resolveSamplingParams(params, {}), grammar: null, onUpdate: () => {} }),
    );
    const steps: StepWaits[] = [];
    while (engine.hasUnfinished()) {
      events = [];
      deviceTokens = 0;
      engine.step();
      const waits = events.filter((e, i) => e === 'read' && events[i - 1] === 'sample').length;
      steps.push({ passes: events.filter((e) => e === 'sample').length, waits, deviceTokens });
    }
    return steps;
  } finally {
    backend.dispose();
  }
}
