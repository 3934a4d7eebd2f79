import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { EngineOptions } from '../config.ts';
import { countingSteps, generateAll, OUTPUT_LENS, PROMPTS } from '../../test/helpers/step-timeline-workload.ts';
import { LLM } from './llm.ts';
import { HOST_PHASES, type StepRecord } from './step-timeline.ts';

// The step timeline on the CPU backend, whose time marks are the host clock: every step() call is
// recorded once, its phases tile the call, and the device's share of a step lies within the call.

const BASE: EngineOptions = { backend: 'cpu', showProgress: false, numKvBlocks: 256, maxNumSeqs: 8 };

for (const asyncScheduling of [true, false]) {
  test(`every step() call is recorded once, its phases tiling it and its device time inside it, the compositions adding up to the workload (asyncScheduling ${asyncScheduling})`, async () => {
    const llm = await LLM.load({ ...BASE, asyncScheduling });
    try {
      const records: StepRecord[] = [];
      llm.startStepTimeline((r) => records.push(r));
      const { steps } = await countingSteps(llm, () => generateAll(llm));
      llm.stopStepTimeline();
      assert.equal(records.length, steps);
      assert.deepEqual(records.map((r) => r.index), records.map((_, i) => i));
      const sum = (f: (r: StepRecord) => number) => records.reduce((t, r) => t + f(r), 0);
      assert.equal(sum((r) => r.composition.prefillTokens), PROMPTS.reduce((n, p) => n + p.length, 0));
      // Each request's first token comes from its prompt's last chunk; every later one from a decode row.
      assert.equal(sum((r) => r.composition.decodeRows), OUTPUT_LENS.reduce((n, len) => n + len - 1, 0));
      assert.equal(sum((r) => r.composition.verifyTokens), 0);
      records.forEach((r, i) => {
        const where = `step ${i}`;
        assert.ok(r.composition.batchSize >= 1 && r.composition.batchSize <= 8, where);
        assert.ok(r.hostStartMs <= r.hostEndMs, where);
        const inside = HOST_PHASES.filter((p) => p !== 'between').reduce((t, p) => t + r.host[p], 0);
        assert.ok(Math.abs(inside - (r.hostEndMs - r.hostStartMs)) < 1e-6, `${where}: its phases (${inside} ms) tile the call`);
        for (const p of HOST_PHASES) assert.ok(r.host[p] >= 0, `${where}: ${p}`);
        if (i > 0) assert.ok(Math.abs(r.host.between - (r.hostStartMs - records[i - 1].hostEndMs)) < 1e-6, `${where}: between steps`);
        const d = r.device;
        assert.ok(d !== null, `${where} launched`);
        const busy = d.prepareMs + d.forwardMs + d.samplingMs;
        assert.ok(d.prepareMs >= 0 && d.forwardMs > 0 && d.samplingMs >= 0, where);
        // The CPU twin computes as it is called: the step's device time lies within its call.
        assert.ok(d.startMs >= r.hostStartMs - 1e-6 && d.startMs + busy <= r.hostEndMs + 1e-6, `${where}: device ${d.startMs}+${busy} within ${r.hostStartMs}..${r.hostEndMs}`);
        assert.equal(d.gapBeforeMs === null, i === 0, where);
        if (d.gapBeforeMs !== null) assert.ok(d.gapBeforeMs >= 0, where);
      });
    } finally {
      await llm.close();
    }
  });
}

test('without a timeline no step marks the backend, and recording one changes no output', async () => {
  const llm = await LLM.load(BASE);
  try {
    const plain = await countingSteps(llm, () => generateAll(llm));
    assert.ok(plain.steps > 0);
    assert.equal(plain.marks, 0);
    llm.startStepTimeline(() => undefined);
    const timed = await countingSteps(llm, () => generateAll(llm));
    llm.stopStepTimeline();
    // Four marks per launched step: here every step launches one.
    assert.equal(timed.marks, 4 * timed.steps);
    assert.deepEqual(timed.value.map(([o]) => o.outputs[0].tokenIds), plain.value.map(([o]) => o.outputs[0].tokenIds));
    const after = await countingSteps(llm, () => generateAll(llm));
    assert.equal(after.marks, 0, 'stopped, the timeline leaves no trace');
  } finally {
    await llm.close();
  }
});

test('steps that verify drafts are recorded as such: each sequence\'s last token and its drafts', async () => {
  const llm = await LLM.load({ ...BASE, speculative: { method: 'ngram', numSpeculativeTokens: 3, ngramMin: 1, ngramMax: 2 } });
  try {
    const records: StepRecord[] = [];
    llm.startStepTimeline((r) => records.push(r));
    // A prompt of one repeated pattern: the n-gram lookup finds drafts at every step.
    const prompt = Array.from({ length: 30 }, (_, t) => [5, 6, 7][t % 3]);
    await llm.generate([prompt], { temperature: 0, maxTokens: 12, ignoreEos: true });
    llm.stopStepTimeline();
    const verifying = records.filter((r) => r.composition.verifyTokens > 0);
    assert.ok(verifying.length > 0, 'some step verified drafts');
    for (const r of verifying) assert.ok(r.composition.verifyTokens >= 2 && r.composition.batchSize === 1);
  } finally {
    await llm.close();
  }
});

test('a timeline is started once and stopped once', async () => {
  const llm = await LLM.load(BASE);
  try {
    assert.throws(() => llm.stopStepTimeline(), /no step timeline is recording/);
    llm.startStepTimeline(() => undefined);
    assert.throws(() => llm.startStepTimeline(() => undefined), /a step timeline is recording already/);
    llm.stopStepTimeline();
  } finally {
    await llm.close();
  }
});
