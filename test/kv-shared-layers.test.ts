import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LLM } from '../src/engine/llm.ts';
import { listOracleFixtures } from './helpers/oracle-fixtures.ts';
import { checkGreedy, fixtureKvLayers } from './helpers/transformers-parity.ts';

// Gemma 4's KV-shared layers hold no pool of their own: they read their source layer's, so whatever
// moves a block (here preemption by swap, with an int8 cache's scales too) moves their keys with it.

const fixture = listOracleFixtures().find((f) => f.name === 'gemma4-ple-kv-shared')!;
const SWAPPING = { preemptionMode: 'swap', swapSpace: 0.01, numKvBlocks: 8, maxNumBatchedTokens: 16 } as const;

test('the fixture has KV-shared layers', () => {
  assert.deepEqual(fixtureKvLayers(fixture).map((spec) => (spec.kind === 'attention' ? (spec.sharedKvDistance ?? 0) : -1)), [0, 0, 2, 2]);
});

test("KV-shared layers under swap preemption give transformers' greedy tokens", async () => {
  await checkGreedy(fixture, { backend: 'cpu', logitTolerance: 1e-4, greedy: 'exact' }, SWAPPING, true);
});

test('with an int8 KV cache, swapped KV-shared layers give the tokens the same cache gives without pressure', async () => {
  const run = async (options: object) => {
    const llm = await LLM.load({ model: fixture.dir, backend: 'cpu', showProgress: false, kvCacheDtype: 'int8', ...options });
    try {
      const outputs = await llm.generate(fixture.oracle.prompts, { temperature: 0, ignoreEos: true, maxTokens: 24 });
      return { tokens: outputs.map((o) => o.outputs[0].tokenIds), swaps: llm.stats().numSwapsTotal };
    } finally {
      await llm.close();
    }
  };
  const [alone, swapped] = [await run({ numKvBlocks: 64 }), await run(SWAPPING)];
  assert.ok(swapped.swaps > 0, 'the small pool was meant to swap');
  assert.deepEqual(swapped.tokens, alone.tokens);
});
