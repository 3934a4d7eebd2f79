import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LLM } from '../src/engine/llm.ts';
import type { EngineConfig } from '../src/config.ts';
import { forkStream } from '../src/sampling/rng.ts';
import { crowd } from './helpers/crowd.ts';

// Preemption by swap (docs/long-context.md) end to end on the CPU backend: under a pool far too
// small for the batch, with requests aborted midway, swapping and recomputing give every request
// the tokens it gives alone, and the pool and the swap space are whole again afterwards.

const GREEDY = { temperature: 0, ignoreEos: true, maxTokens: 48 } as const;
const NUM_KV_BLOCKS = 20;
const BASE = { backend: 'cpu', showProgress: false, blockSize: 8, maxNumBatchedTokens: 16, maxNumSeqs: 8 } as const;

/** Prompts of 12 to 89 tokens: some recompute within one step's 16-token budget, most would not. */
function prompts(seed: number): number[][] {
  const rng = forkStream(seed, 0);
  return Array.from({ length: 10 }, (_, k) => Array.from({ length: 12 + Math.floor(rng.nextFloat() * 78) }, () => 5 + Math.floor(rng.nextFloat() * 8000) + k));
}

/** Greedy tokens of each prompt run alone under `options`. */
async function aloneTokens(options: Partial<EngineConfig>, list: number[][]): Promise<number[][]> {
  const alone = await LLM.load({ ...BASE, ...options });
  const expected: number[][] = [];
  try {
    for (const prompt of list) expected.push((await alone.generate([prompt], GREEDY))[0].outputs[0].tokenIds);
  } finally {
    await alone.close();
  }
  return expected;
}

/**
 * Runs the prompts crowded into the small pool with `preemptionMode` (and `options`) and checks
 * each request gets its tokens alone, preemption happened (by swap when swapping), and the pool
 * and the swap space end full.
 */
async function checkCrowded(preemptionMode: 'recompute' | 'swap', options: Partial<EngineConfig>, list: number[][], abortAfter: (number | null)[], expected: number[][]): Promise<void> {
  const label = `${preemptionMode} ${JSON.stringify(options)}`;
  const llm = await LLM.load({ ...BASE, ...options, numKvBlocks: NUM_KV_BLOCKS, preemptionMode, swapSpace: 0.01 });
  try {
    const outputs = await crowd(llm, list, GREEDY, abortAfter);
    outputs.forEach((out, k) => {
      const tokens = out.outputs[0].tokenIds;
      if (abortAfter[k] === null) assert.deepEqual(tokens, expected[k], `${label}: prompt ${k}`);
      else assert.deepEqual(tokens, expected[k].slice(0, tokens.length), `${label}: prompt ${k}, aborted after ${tokens.length} tokens`);
    });
    const stats = llm.stats();
    console.log(`${label}: ${stats.numPreemptionsTotal} preemptions, ${stats.numSwapsTotal} by swap`);
    assert.ok(stats.numPreemptionsTotal > 0, `${label}: the ${NUM_KV_BLOCKS}-block pool was meant to force preemption`);
    if (preemptionMode === 'recompute') {
      assert.equal(stats.numSwapsTotal, 0);
      assert.equal(stats.numSwapBlocks, 0);
    } else {
      assert.ok(stats.numSwapsTotal > 0, 'long contexts were swapped');
      assert.equal(
        outputs.reduce((n, out) => n + out.metrics.numSwaps, 0),
        stats.numSwapsTotal,
        'request metrics report each swap',
      );
      assert.ok(outputs.every((out) => out.metrics.numSwaps <= out.metrics.numPreemptions));
    }
    assert.equal(stats.numFreeKvBlocks, NUM_KV_BLOCKS, `${label}: every KV block is free again`);
    assert.equal(stats.numFreeSwapBlocks, stats.numSwapBlocks, `${label}: every swap block is free again`);
    assert.equal(stats.numSwapped, 0);
  } finally {
    await llm.close();
  }
}

function testSeedFromEnv(name: string): number {
  const seed = process.env.KEEL_TEST_SEED ? Number(process.env.KEEL_TEST_SEED) : Date.now() % 1_000_000;
  console.log(`${name}: seed ${seed} (replay with KEEL_TEST_SEED=${seed})`);
  return seed;
}

test('under forced memory pressure with random aborts, swap and recompute preemption give each request its tokens alone, and the pool and swap space end full', async () => {
  const seed = testSeedFromEnv('swap preemption test');
  const list = prompts(seed);
  const rng = forkStream(seed, 1);
  const abortAfter = list.map(() => (rng.nextFloat() < 0.3 ? 1 + Math.floor(rng.nextFloat() * 40) : null));
  const expected = await aloneTokens({}, list);
  for (const preemptionMode of ['recompute', 'swap'] as const) await checkCrowded(preemptionMode, {}, list, abortAfter, expected);
});

test('with an int8 KV cache, swapping moves the scales with the codes: each request gets its tokens alone with the same cache', async () => {
  const list = prompts(testSeedFromEnv('int8 swap preemption test'));
  const options = { kvCacheDtype: 'int8' } as const;
  await checkCrowded('swap', options, list, list.map(() => null), await aloneTokens(options, list));
});

test('swap options are checked', async () => {
  await assert.rejects(LLM.load({ ...BASE, preemptionMode: 'spill' as 'swap' }), /preemptionMode must be recompute or swap/);
  await assert.rejects(LLM.load({ ...BASE, preemptionMode: 'swap', swapSpace: 0 }), /swapSpace must be a positive number of GiB/);
  await assert.rejects(LLM.load({ ...BASE, preemptionMode: 'swap', swapSpace: 1e-9 }), /holds no KV block/);
});
