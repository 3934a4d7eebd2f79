import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LLM } from '../src/engine/llm.ts';
import { aloneTokens, checkCrowded, crowdedPrompts, randomAborts, SWAP_BASE } from './helpers/swap-runs.ts';

// Preemption by swap (docs/long-context.md) end to end on the CPU backend: under a pool far too
// small for the batch, with requests aborted midway, swapping and recomputing give every request
// the tokens it gives alone, and the pool and the swap space are whole again afterwards.

function testSeedFromEnv(name: string): number {
  const seed = process.env.KEEL_TEST_SEED ? Number(process.env.KEEL_TEST_SEED) : Date.now() % 1_000_000;
  console.log(`${name}: seed ${seed} (replay with KEEL_TEST_SEED=${seed})`);
  return seed;
}

test('under forced memory pressure with random aborts, swap and recompute preemption give each request its tokens alone, and the pool and swap space end full', async () => {
  const seed = testSeedFromEnv('swap preemption test');
  const list = crowdedPrompts(seed);
  const abortAfter = randomAborts(seed, list);
  const expected = await aloneTokens({}, list);
  for (const preemptionMode of ['recompute', 'swap'] as const) await checkCrowded(preemptionMode, {}, list, abortAfter, expected);
});

test('with an int8 KV cache, swapping moves the scales with the codes: each request gets its tokens alone with the same cache', async () => {
  const list = crowdedPrompts(testSeedFromEnv('int8 swap preemption test'));
  const options = { kvCacheDtype: 'int8' } as const;
  await checkCrowded('swap', options, list, list.map(() => null), await aloneTokens(options, list));
});

test('swap options are checked', async () => {
  await assert.rejects(LLM.load({ ...SWAP_BASE, preemptionMode: 'spill' as 'swap' }), /preemptionMode must be recompute or swap/);
  await assert.rejects(LLM.load({ ...SWAP_BASE, preemptionMode: 'swap', swapSpace: 0 }), /swapSpace must be a positive number of GiB/);
  await assert.rejects(LLM.load({ ...SWAP_BASE, preemptionMode: 'swap', swapSpace: 1e-9 }), /holds no KV block/);
});
