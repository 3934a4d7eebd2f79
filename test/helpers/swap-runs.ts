import assert from 'node:assert/strict';
import type { EngineOptions } from '../../src/config.ts';
import { LLM } from '../../src/engine/llm.ts';
import { forkStream } from '../../src/sampling/rng.ts';
import { crowd } from './crowd.ts';

// Preemption under forced memory pressure (docs/long-context.md), shared by the one-device and the
// parallel tests: keel-tiny crowded into a pool far too small for the batch, with requests
// aborted midway, against each prompt run alone.

export const SWAP_GREEDY = { temperature: 0, ignoreEos: true, maxTokens: 48 } as const;
/** The crowded runs' pool: far too small for ten prompts of up to 89 tokens and 48 more each. */
export const CROWDED_KV_BLOCKS = 20;
export const SWAP_BASE = { backend: 'cpu', showProgress: false, blockSize: 8, maxNumBatchedTokens: 16, maxNumSeqs: 8 } as const;

/** Prompts of 12 to 89 tokens: some recompute within one step's 16-token budget, most would not. */
export function crowdedPrompts(seed: number): number[][] {
  const rng = forkStream(seed, 0);
  return Array.from({ length: 10 }, (_, k) => Array.from({ length: 12 + Math.floor(rng.nextFloat() * 78) }, () => 5 + Math.floor(rng.nextFloat() * 8000) + k));
}

/** Request k is aborted after abortAfter[k] tokens (null: never): about 3 in 10 are. */
export function randomAborts(seed: number, list: readonly number[][]): (number | null)[] {
  const rng = forkStream(seed, 1);
  return list.map(() => (rng.nextFloat() < 0.3 ? 1 + Math.floor(rng.nextFloat() * 40) : null));
}

/** Greedy tokens of each prompt run alone under `options`. */
export async function aloneTokens(options: EngineOptions, list: number[][]): Promise<number[][]> {
  const alone = await LLM.load({ ...SWAP_BASE, ...options });
  const expected: number[][] = [];
  try {
    for (const prompt of list) expected.push((await alone.generate([prompt], SWAP_GREEDY))[0].outputs[0].tokenIds);
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
export async function checkCrowded(preemptionMode: 'recompute' | 'swap', options: EngineOptions, list: number[][], abortAfter: (number | null)[], expected: number[][]): Promise<void> {
  const label = `${preemptionMode} ${JSON.stringify(options)}`;
  const llm = await LLM.load({ ...SWAP_BASE, ...options, numKvBlocks: CROWDED_KV_BLOCKS, preemptionMode, swapSpace: 0.01 });
  try {
    const outputs = await crowd(llm, list, SWAP_GREEDY, abortAfter);
    outputs.forEach((out, k) => {
      const tokens = out.outputs[0].tokenIds;
      if (abortAfter[k] === null) assert.deepEqual(tokens, expected[k], `${label}: prompt ${k}`);
      else assert.deepEqual(tokens, expected[k].slice(0, tokens.length), `${label}: prompt ${k}, aborted after ${tokens.length} tokens`);
    });
    const stats = llm.stats();
    console.log(`${label}: ${stats.numPreemptionsTotal} preemptions, ${stats.numSwapsTotal} by swap`);
    assert.ok(stats.numPreemptionsTotal > 0, `${label}: the ${CROWDED_KV_BLOCKS}-block pool was meant to force preemption`);
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
    assert.equal(stats.numFreeKvBlocks, CROWDED_KV_BLOCKS, `${label}: every KV block is free again`);
    assert.equal(stats.numFreeSwapBlocks, stats.numSwapBlocks, `${label}: every swap block is free again`);
    assert.equal(stats.numSwapped, 0);
  } finally {
    await llm.close();
  }
}
