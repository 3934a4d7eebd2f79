import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import type { EngineOptions } from '../src/config.ts';
import { LLM } from '../src/engine/llm.ts';
import { kvBytesPerBlock, kvCacheGroups, kvStorage, type LayerKvSpec } from '../src/step/kv-cache-layout.ts';
import { FIXTURES_DIR } from './helpers/oracle-fixtures.ts';
import { TestRandom, testSeed } from './helpers/cpu-random.ts';

// Quest's sparse decode attention on models mixing sliding-window and full layers, whose KV cache
// is split into groups over shared pools (docs/long-context.md): the full layers go sparse, their
// key summaries live in the pools they share with sliding layers, and the selection reads the full
// group's block tables.
const seed = testSeed('sparse-attention-kv-groups');
const random = new TestRandom(seed);
const GREEDY = { temperature: 0, ignoreEos: true, maxTokens: 24 } as const;
// Fixtures of 128 positions and a vocabulary of 256: prompts long enough for many blocks of 4.
const prompts = [70, 52, 31].map((n) => Array.from({ length: n }, () => random.int(1, 255)));
// Every full layer sparse, in blocks of 4: one sink block, two window blocks and three chosen ones.
const QUEST: EngineOptions = { sparseAttention: 'quest', sparseTokenBudget: 24, sparseSinkTokens: 4, sparseWindowTokens: 8, sparseDenseLayers: [] };

async function tokens(fixture: string, options: EngineOptions, ids: number[][]): Promise<number[][]> {
  const llm = await LLM.load({ model: join(FIXTURES_DIR, fixture), backend: 'cpu', showProgress: false, blockSize: 4, ...options });
  try {
    return (await llm.generate(ids, GREEDY)).map((o) => o.outputs[0].tokenIds);
  } finally {
    await llm.close();
  }
}

// Pools that hold one sequence of 94 tokens with 16-token prefill chunks (its full group's 24 blocks
// and each sliding group's window) but not every block it is ever given: its sliding groups free
// blocks behind their window, and once the never-used blocks run out, the full group is handed
// those (the free queue is oldest first) and writes its own keys and summaries over them.
const TIGHT_POOLS: Record<string, number> = { 'gemma2-softcap': 40, 'gemma3-text': 80, 'gpt-oss': 40 };

for (const [fixture, tightPool] of Object.entries(TIGHT_POOLS)) {
  test(`${fixture}: a budget covering every sequence gives dense attention's tokens (seed ${seed})`, async () => {
    assert.deepEqual(await tokens(fixture, { ...QUEST, sparseTokenBudget: 128 }, prompts), await tokens(fixture, {}, prompts));
  });

  test(`${fixture}: sparse decodes give the same tokens batched, alone, and in a pool whose blocks pass from sliding groups to the full one (seed ${seed})`, async () => {
    const batched = await tokens(fixture, QUEST, prompts);
    for (const [i, prompt] of prompts.entries()) assert.deepEqual((await tokens(fixture, QUEST, [prompt]))[0], batched[i], `prompt ${i} alone`);
    // One at a time, so that no sequence is preempted: a recomputed sequence would prefill its
    // generated tokens densely, which changes later layers' keys.
    const llm = await LLM.load({ model: join(FIXTURES_DIR, fixture), backend: 'cpu', showProgress: false, blockSize: 4, ...QUEST, numKvBlocks: tightPool, maxNumBatchedTokens: 16, enablePrefixCaching: false });
    try {
      for (const [i, prompt] of prompts.entries()) {
        const [output] = await llm.generate([prompt], GREEDY);
        assert.deepEqual(output.outputs[0].tokenIds, batched[i], `prompt ${i} in a ${tightPool}-block pool`);
      }
    } finally {
      await llm.close();
    }
  });
}

test('a sparse full layer keeps its key summaries in the pool it shares with a sliding layer, counted once a block', () => {
  const full: LayerKvSpec = { kind: 'attention', numKvHeads: 2, headDim: 8, slidingWindow: null };
  const layers: LayerKvSpec[] = [{ ...full, slidingWindow: 16 }, { ...full, keySummaries: true }, { ...full, slidingWindow: 16 }, full];
  const { groupOf } = kvCacheGroups(layers, null);
  const storage = kvStorage(layers, groupOf);
  // Two groups ([0, 2] sliding, [1, 3] full) over two pools: layer 1 shares with layer 0, layer 3 with layer 2.
  assert.deepEqual(storage.poolOf, [0, 0, 1, 1]);
  assert.deepEqual(
    storage.pools.map((spec) => spec.kind === 'attention' && spec.keySummaries === true),
    [true, false],
  );
  // Per block of 4 tokens, float32: K/V 4 x 2 x 2 x 8 per pool, and one pool's 2 x 2 x 8 summaries.
  assert.equal(kvBytesPerBlock(layers, 4, 4, 'auto', groupOf), (2 * 4 * 2 * 2 * 8 + 2 * 2 * 8) * 4);
});
