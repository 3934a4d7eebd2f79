import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { LLM } from '../src/engine/llm.ts';
import { assertKilledRankFailsLoudly } from './helpers/killed-rank.ts';
import { FIXTURES_DIR, listOracleFixtures } from './helpers/oracle-fixtures.ts';

// A parallel run fails loudly, never hangs: a rank that dies makes the engine's next step fail
// with an error naming it (the server answers 503), and what cannot be split is refused at load.

const fixture = listOracleFixtures().find((f) => f.name === 'llama-gqa')!;
const load = (options: Parameters<typeof LLM.load>[0]) => LLM.load({ model: fixture.dir, backend: 'cpu', showProgress: false, numKvBlocks: 64, ...options });
const GREEDY = { temperature: 0, ignoreEos: true, maxTokens: 4 };

test('a killed rank makes every request fail at once with an error naming it, and the server answer 503', async () => {
  await assertKilledRankFailsLoudly(await load({ tensorParallelSize: 2 }), 1, fixture.oracle.prompts[0], /parallel rank 1 failed: its worker exited/);
});

test('a killed rank of the last pipeline stage fails the request the engine waits on for its logits, naming it', async () => {
  const llm = await load({ tensorParallelSize: 2, pipelineParallelSize: 2 });
  try {
    await llm.generate([fixture.oracle.prompts[0]], GREEDY);
    // Rank 3: the last stage's second tensor rank (rank = stage × 2 + tensor rank).
    llm.parallelRanks!.kill(3);
    await assert.rejects(llm.generate([fixture.oracle.prompts[0]], GREEDY), /parallel rank 3 failed: its worker exited/);
  } finally {
    await llm.close();
  }
});

test('a killed rank is reported to the run\'s failure listeners once, and to later ones at once (a data-parallel replica\'s process exits on it)', async () => {
  const llm = await load({ tensorParallelSize: 2 });
  try {
    const heard: string[] = [];
    llm.parallelRanks!.onFailure((error) => heard.push(error.message));
    llm.parallelRanks!.kill(1);
    const deadline = Date.now() + 30_000;
    while (heard.length === 0) {
      assert.ok(Date.now() < deadline, 'the failure was reported');
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.equal(heard.length, 1);
    assert.match(heard[0], /parallel rank 1 failed: its worker exited/);
    llm.parallelRanks!.onFailure((error) => heard.push(error.message));
    assert.deepEqual(heard, [heard[0], heard[0]]);
  } finally {
    await llm.close();
  }
});

test('more pipeline stages than layers are refused at load', async () => {
  await assert.rejects(load({ pipelineParallelSize: 3 }), /pipeline-parallel size 3 exceeds the model's 2 layers/);
});

test('a tensor-parallel size that does not divide what it splits is refused at load, naming both', async () => {
  await assert.rejects(load({ tensorParallelSize: 3 }), /tensor-parallel size 3 does not divide the vocabulary of model\.embed_tokens\.weight \(256\)/);
});

test('combinations a parallel run does not support yet are refused by name', async () => {
  await assert.rejects(load({ tensorParallelSize: 2, enableLora: true }), /LoRA adapters are not supported in parallel runs yet/);
  const heads = join(FIXTURES_DIR, 'spec-heads');
  for (const speculative of [
    { method: 'draft', model: fixture.dir },
    { method: 'eagle', model: join(heads, 'eagle-llama-gqa') },
    { method: 'eagle3', model: join(heads, 'eagle3-llama-gqa') },
    { method: 'mtp' },
    { method: 'self', selfSpecLayers: 1 },
  ] as const) {
    for (const sizes of [{ tensorParallelSize: 2 }, { pipelineParallelSize: 2 }]) {
      await assert.rejects(load({ ...sizes, speculative }), new RegExp(`speculative method ${speculative.method} is not supported in parallel runs yet`));
    }
  }
  await assert.rejects(load({ enableExpertParallel: true }), /give tensorParallelSize > 1 too/);
});
