import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LLM } from '../src/engine/llm.ts';
import type { CompletionOutput } from '../src/engine/outputs.ts';
import { forkStream } from '../src/sampling/rng.ts';
import { assertGreedyUpToNearTie } from './helpers/near-tie.ts';

// Preemption by swap on CUDA over keel-tiny (test/swap-preemption.test.ts is the CPU side):
// pinned swap space, copies on the transfer stream beside the compute, CUDA graphs and async
// scheduling on. Batches of other sizes round bf16 differently, so a crowded run may leave the
// lone run's tokens only at a near-tie.

const GREEDY = { temperature: 0, ignoreEos: true, maxTokens: 64, logprobs: 2 } as const;
const BASE = { backend: 'cuda', showProgress: false, blockSize: 16, maxNumBatchedTokens: 64, maxNumSeqs: 16 } as const;
const NUM_KV_BLOCKS = 24;

test('CUDA: under forced memory pressure, swap and recompute preemption decode as each request alone does, up to bf16 near-ties, and the pool and swap space end full', async () => {
  const rng = forkStream(3, 0);
  const prompts = Array.from({ length: 16 }, () => Array.from({ length: 40 + Math.floor(rng.nextFloat() * 200) }, () => 5 + Math.floor(rng.nextFloat() * 8000)));
  const alone = await LLM.load(BASE);
  const expected: CompletionOutput[] = [];
  try {
    for (const prompt of prompts) expected.push((await alone.generate([prompt], GREEDY))[0].outputs[0]);
  } finally {
    await alone.close();
  }
  for (const preemptionMode of ['recompute', 'swap'] as const) {
    const llm = await LLM.load({ ...BASE, numKvBlocks: NUM_KV_BLOCKS, preemptionMode, swapSpace: 0.05 });
    try {
      const outputs = await llm.generate(prompts, GREEDY);
      assertGreedyUpToNearTie(outputs, expected, `${preemptionMode}, `);
      const stats = llm.stats();
      console.log(`${preemptionMode}: ${stats.numPreemptionsTotal} preemptions, ${stats.numSwapsTotal} by swap`);
      assert.ok(stats.numPreemptionsTotal > 0, 'the pool was meant to force preemption');
      if (preemptionMode === 'swap') assert.ok(stats.numSwapsTotal > 0, 'long contexts were swapped');
      assert.equal(stats.numFreeKvBlocks, NUM_KV_BLOCKS);
      assert.equal(stats.numFreeSwapBlocks, stats.numSwapBlocks);
    } finally {
      await llm.close();
    }
  }
});
