import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { EngineOptions } from '../src/config.ts';
import { LLM } from '../src/engine/llm.ts';
import { converse, generated } from './helpers/conversations.ts';
import { testSeed } from './helpers/cpu-random.ts';
import { listOracleFixtures } from './helpers/oracle-fixtures.ts';
import { aloneTokens, checkCrowded, crowdedPrompts, randomAborts } from './helpers/swap-runs.ts';
import { checkGreedy, checkHostTierRerun, type ParityOptions } from './helpers/transformers-parity.ts';

// Swap preemption and the prefix cache's host tier in parallel runs on the CPU backend (ranks in
// worker threads, docs/parallelism.md): every rank holds host spaces for its own KV shard, and
// the engine's step orders make every rank copy the same blocks in the same step. A rank that
// skipped a copy would attend over another sequence's keys (or none: the CPU backend refuses to
// swap in a host block nothing was copied to), so the tokens would differ from the lone runs'.

const RUNS: { name: string; parallel: EngineOptions }[] = [
  { name: 'TP 2', parallel: { tensorParallelSize: 2 } },
  { name: 'PP 2', parallel: { pipelineParallelSize: 2 } },
];

for (const { name, parallel } of RUNS) {
  describe(name, () => {
    test('under forced memory pressure with random aborts, swap and recompute preemption give each request its tokens alone, and the pool and swap space end full', async () => {
      const seed = testSeed(`${name} swap preemption`);
      const list = crowdedPrompts(seed);
      const abortAfter = randomAborts(seed, list);
      const expected = await aloneTokens(parallel, list);
      for (const preemptionMode of ['recompute', 'swap'] as const) await checkCrowded(preemptionMode, parallel, list, abortAfter, expected);
    });

    test('multi-turn conversations outgrowing the pool give the same tokens with the host tier as without caching, and the tier serves their prefixes', async () => {
      const seed = testSeed(`${name} host tier`);
      const base = { backend: 'cpu', showProgress: false, blockSize: 8, maxNumBatchedTokens: 64, maxNumSeqs: 8, numKvBlocks: 32, ...parallel } as const;
      const run = async (options: EngineOptions) => {
        const llm = await LLM.load({ ...base, ...options });
        try {
          const outputs = await converse(llm, seed, 4, 3);
          const stats = llm.stats();
          assert.equal(stats.numFreeKvBlocks, stats.numKvBlocks, 'every block is free again');
          return { tokens: generated(outputs), outputs: outputs.flat(), stats };
        } finally {
          await llm.close();
        }
      };
      const plain = await run({ enablePrefixCaching: false });
      const tiered = await run({ kvOffloadGb: 0.05 });
      assert.deepEqual(tiered.tokens, plain.tokens, 'the host tier changes no token');
      console.log(`${name}: ${tiered.stats.hostCachedPromptTokensTotal} prompt tokens from the host tier, hit rate ${tiered.stats.prefixCacheHitRate.toFixed(3)}`);
      assert.ok(tiered.stats.hostCachedPromptTokensTotal > 0, 'later turns found their history on the host');
      assert.equal(tiered.stats.hostCachedPromptTokensTotal, tiered.outputs.reduce((n, o) => n + o.metrics.numHostCachedTokens, 0), 'each request counts its host hits');
      assert.ok(tiered.stats.numHostCachedBlocks > 0 && tiered.stats.numHostCachedBlocks <= tiered.stats.numHostCacheBlocks);
    });
  });
}

test("each rank's host spaces hold the given GiB of its own shard's blocks: at TP 2 a block is half of one device's, so twice as many fit", async () => {
  const base = { backend: 'cpu', showProgress: false, blockSize: 8, numKvBlocks: 16, preemptionMode: 'swap', swapSpace: 0.0005, kvOffloadGb: 0.0005 } as const;
  const blocks = async (options: EngineOptions) => {
    const llm = await LLM.load({ ...base, ...options });
    try {
      const { numSwapBlocks, numHostCacheBlocks } = llm.stats();
      return { numSwapBlocks, numHostCacheBlocks };
    } finally {
      await llm.close();
    }
  };
  // keel-tiny's block: 4 layers × 2 KV heads × 64 × 8 tokens × keys and values in float32 = 32 KiB; 0.0005 GiB holds 16.
  assert.deepEqual(await blocks({}), { numSwapBlocks: 16, numHostCacheBlocks: 16 });
  // One KV head per rank.
  assert.deepEqual(await blocks({ tensorParallelSize: 2 }), { numSwapBlocks: 32, numHostCacheBlocks: 32 });
  // Two layers per stage.
  assert.deepEqual(await blocks({ pipelineParallelSize: 2 }), { numSwapBlocks: 32, numHostCacheBlocks: 32 });
});

// Other KV layouts against transformers' tokens: MLA's latent rows (replicated on every tensor
// rank), and uneven stages (qwen3-moe's three layers: two on the first stage, one on the last,
// whose blocks are smaller: the first stage's bound the host spaces).
const PARITY: ParityOptions = { backend: 'cpu', logitTolerance: 1e-4, greedy: 'exact' };
const FIXTURE_RUNS: { name: string; parallel: EngineOptions }[] = [
  { name: 'deepseek-v2-lite', parallel: { tensorParallelSize: 2 } },
  { name: 'qwen3-moe', parallel: { pipelineParallelSize: 2 } },
  { name: 'llama-gqa', parallel: { tensorParallelSize: 2, pipelineParallelSize: 2 } },
];

for (const { name, parallel } of FIXTURE_RUNS) {
  const fixture = listOracleFixtures().find((f) => f.name === name)!;
  describe(`${name}, ${JSON.stringify(parallel)}`, () => {
    test("greedy continuations under forced preemption by swap (8-block pool, 8-token steps) match transformers'", async () => {
      await checkGreedy(fixture, PARITY, { ...parallel, numKvBlocks: 8, maxNumBatchedTokens: 8, preemptionMode: 'swap', swapSpace: 0.01 }, true);
    });
    test("prompts evicted to the host tier and loaded back match transformers'", async () => {
      await checkHostTierRerun(fixture, PARITY, parallel);
    });
    test("every rank streaming all of its stage's decoder layers from host memory matches transformers'", async () => {
      await checkGreedy(fixture, PARITY, { ...parallel, cpuOffloadGb: 64 }, false);
    });
  });
}
