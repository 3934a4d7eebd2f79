import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LLM } from '../src/engine/llm.ts';
import type { StepRecord } from '../src/engine/step-timeline.ts';
import { countingSteps, generateAll, OUTPUT_LENS, PROMPTS } from './helpers/step-timeline-workload.ts';

// The step timeline on CUDA (src/engine/step-timeline.test.ts is the CPU side): events on the
// stream around each step's forward, a replayed decode graph included, and its sampling pass.

test('CUDA: every step is recorded with device times from its events, and recording changes no output', async () => {
  // The timed run repeats the plain run's prompts: without prefix caching it prefills all of them again.
  const llm = await LLM.load({ backend: 'cuda', showProgress: false, numKvBlocks: 256, maxNumSeqs: 8, enablePrefixCaching: false });
  try {
    const plain = await countingSteps(llm, () => generateAll(llm));
    assert.equal(plain.marks, 0, 'no timeline, no event recorded');
    const records: StepRecord[] = [];
    llm.startStepTimeline((r) => records.push(r));
    const timed = await countingSteps(llm, () => generateAll(llm));
    llm.stopStepTimeline();
    assert.deepEqual(timed.value.map(([o]) => o.outputs[0].tokenIds), plain.value.map(([o]) => o.outputs[0].tokenIds));
    assert.equal(records.length, timed.steps);
    const launched = records.filter((r) => r.device !== null);
    assert.equal(timed.marks, 4 * launched.length);
    const sum = (f: (r: StepRecord) => number) => records.reduce((t, r) => t + f(r), 0);
    assert.equal(sum((r) => r.composition.prefillTokens), PROMPTS.reduce((n, p) => n + p.length, 0));
    assert.equal(sum((r) => r.composition.decodeRows), OUTPUT_LENS.reduce((n, len) => n + len - 1, 0));
    let previousEnd = -Infinity;
    for (const r of launched) {
      const d = r.device!;
      assert.ok(d.forwardMs > 0 && d.samplingMs > 0 && d.prepareMs >= 0, `step ${r.index}: ${JSON.stringify(d)}`);
      assert.ok(d.gapBeforeMs === null || d.gapBeforeMs >= 0, `step ${r.index}: gap ${d.gapBeforeMs}`);
      // The device reaches a step once it is queued, and after the step before it.
      assert.ok(d.startMs >= previousEnd - 1e-6, `step ${r.index} starts at ${d.startMs} ms, after ${previousEnd} ms`);
      previousEnd = d.startMs + d.prepareMs + d.forwardMs + d.samplingMs;
    }
  } finally {
    await llm.close();
  }
});
