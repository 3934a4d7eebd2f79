import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { EngineConfig } from '../config.ts';
import type { SamplingParams } from '../sampling/sampling-params.ts';
import { resolveSamplingParams } from '../sampling/validate.ts';
import { LLM } from './llm.ts';
import { loadEngine, type LoadedEngine } from './load-engine.ts';
import type { RequestOutput } from './outputs.ts';

// Async scheduling launches step N+1 before the host reads step N's tokens. It must change no
// output: every request below runs with it on and off and must come out the same.

const PROMPTS = ['def fibonacci(n):', 'import os\n', 'class Stack:\n', '# sum a list\n', 'for i in range(10):'];
const BASE = { backend: 'cpu', showProgress: false, numKvBlocks: 256 } as const;

let reference: LLM;
before(async () => {
  reference = await LLM.load({ ...BASE, asyncScheduling: false });
});
after(() => reference.close());

async function both(config: Partial<EngineConfig>, run: (llm: LLM) => Promise<RequestOutput[]>): Promise<{ sync: RequestOutput[]; overlapped: RequestOutput[] }> {
  const results: RequestOutput[][] = [];
  for (const asyncScheduling of [false, true]) {
    const llm = await LLM.load({ ...BASE, ...config, asyncScheduling });
    try {
      results.push(await run(llm));
      const stats = llm.stats();
      assert.equal(stats.numFreeKvBlocks, stats.numKvBlocks, `asyncScheduling ${asyncScheduling}: every block is free at the end`);
    } finally {
      await llm.close();
    }
  }
  return { sync: results[0], overlapped: results[1] };
}

function completions(outputs: RequestOutput[]) {
  return outputs.map((o) => o.outputs.map((c) => ({ tokenIds: c.tokenIds, text: c.text, finishReason: c.finishReason, stopReason: c.stopReason })));
}

test('greedy, seeded, stopped, truncated, penalized and forked requests come out the same with the host overlapped', async () => {
  // A token the greedy continuation reaches after a few steps: a stop id that ends it mid-flight.
  const [probe] = await reference.generate([PROMPTS[1]], { temperature: 0, maxTokens: 12, ignoreEos: true });
  const stopId = probe.outputs[0].tokenIds[5];
  const mixed: Partial<SamplingParams>[] = [
    { temperature: 0, maxTokens: 24, ignoreEos: true },
    { temperature: 0, maxTokens: 24, stopTokenIds: [stopId] },
    { temperature: 0.8, seed: 11, maxTokens: 20 },
    { temperature: 1, seed: 5, maxTokens: 16, topK: 20 },
    { temperature: 0.7, seed: 3, maxTokens: 10, n: 2 },
    // Penalties count the token still on the device when the next step is launched.
    { temperature: 0, maxTokens: 20, ignoreEos: true, repetitionPenalty: 1.5, frequencyPenalty: 0.7 },
    { temperature: 0.9, seed: 8, maxTokens: 20, presencePenalty: 1.2, topP: 0.8, minP: 0.05, logprobs: 3 },
    { temperature: 0, maxTokens: 12, minTokens: 8, stopTokenIds: [stopId] },
  ];
  const { sync, overlapped } = await both({}, (llm) => Promise.all(mixed.map((params, i) => llm.generate([PROMPTS[i % PROMPTS.length]], params).then(([o]) => o))));
  assert.deepEqual(completions(overlapped), completions(sync));
  assert.deepEqual(overlapped[6].outputs[0].logprobs, sync[6].outputs[0].logprobs);
  assert.equal(sync[1].outputs[0].finishReason, 'stop', 'the stop id was reached');
});

test('chunked prefill and preemption by recompute come out the same with the host overlapped', async () => {
  const params = { temperature: 0.9, seed: 21, maxTokens: 30, ignoreEos: true };
  for (const config of [{ maxNumBatchedTokens: 3 }, { numKvBlocks: 12, blockSize: 4 }]) {
    const { sync, overlapped } = await both(config, (llm) => llm.generate(PROMPTS, params));
    assert.deepEqual(completions(overlapped), completions(sync), JSON.stringify(config));
    if ('numKvBlocks' in config) assert.ok(overlapped.some((o) => o.metrics.numPreemptions > 0), 'the small pool preempted');
  }
});

/** The engine on the CPU backend, logging when each step's tokens are launched and read. */
async function tracedEngine(asyncScheduling: boolean): Promise<{ loaded: LoadedEngine; events: string[] }> {
  const loaded = await loadEngine({ ...BASE, asyncScheduling });
  const events: string[] = [];
  const backend = loaded.backend;
  const sampleRows = backend.sampleRows.bind(backend);
  let launched = 0;
  backend.sampleRows = (x, draws) => {
    const step = ++launched;
    events.push(`launch ${step}`);
    const sampled = sampleRows(x, draws);
    return { read: () => (events.push(`read ${step}`), sampled.read()) };
  };
  return { loaded, events };
}

test('with async scheduling the next step is launched before the previous step\'s tokens are read', async () => {
  for (const asyncScheduling of [true, false]) {
    const { loaded, events } = await tracedEngine(asyncScheduling);
    const params = resolveSamplingParams({ temperature: 0, maxTokens: 6, ignoreEos: true }, {});
    loaded.engine.addRequest({ id: 'a', prompt: null, promptTokenIds: [5, 9, 2, 77], params, grammar: null, onUpdate: () => {} });
    while (loaded.engine.hasUnfinished()) loaded.engine.step();
    // Step 6 samples the last token, known to end the request, so it is read at once.
    const expected = asyncScheduling
      ? ['launch 1', 'launch 2', 'read 1', 'launch 3', 'read 2', 'launch 4', 'read 3', 'launch 5', 'read 4', 'launch 6', 'read 5', 'read 6']
      : ['launch 1', 'read 1', 'launch 2', 'read 2', 'launch 3', 'read 3', 'launch 4', 'read 4', 'launch 5', 'read 5', 'launch 6', 'read 6'];
    assert.deepEqual(events, expected, `asyncScheduling ${asyncScheduling}`);
    loaded.backend.dispose();
  }
});

test('a request aborted while its token is on the device ends at once, and its late token is dropped', async () => {
  const { loaded } = await tracedEngine(true);
  const params = resolveSamplingParams({ temperature: 0, maxTokens: 50, ignoreEos: true }, {});
  const updates: number[] = [];
  loaded.engine.addRequest({ id: 'a', prompt: null, promptTokenIds: [5, 9, 2, 77], params, grammar: null, onUpdate: (r) => updates.push(r.completions[0].output.tokenIds.length) });
  loaded.engine.addRequest({ id: 'b', prompt: null, promptTokenIds: [8, 1], params: { ...params, maxTokens: 8 }, grammar: null, onUpdate: () => {} });
  for (let i = 0; i < 4; i++) loaded.engine.step();
  assert.ok(loaded.engine.abort('a'));
  const seen = updates.length;
  const tokensAtAbort = updates[seen - 1];
  while (loaded.engine.hasUnfinished()) loaded.engine.step();
  assert.equal(updates.length, seen, 'no update after the abort');
  assert.equal(tokensAtAbort, 3, 'the abort came with three tokens read and one on the device');
  const stats = loaded.engine.stats();
  assert.equal(stats.numFreeKvBlocks, stats.numKvBlocks);
  loaded.backend.dispose();
});
