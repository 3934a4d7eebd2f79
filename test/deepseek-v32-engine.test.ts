import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LLM } from '../src/engine/llm.ts';
import { listOracleFixtures } from './helpers/oracle-fixtures.ts';

// DeepSeek-V3.2's indexer keys live in a pool beside the MLA latent (docs/long-context.md): swap
// preemption must move them with the latent, and an 8-bit cache quantizes the latent rows only.
// (The parity suite covers batching, prefix caching, chunked prefill, recompute preemption,
// speculative decoding and the host tier against transformers.)

const fixture = listOracleFixtures().find((f) => f.name === 'deepseek-v32')!;
const GREEDY = { temperature: 0, ignoreEos: true, maxTokens: fixture.oracle.max_new_tokens } as const;
const BASE = { model: fixture.dir, backend: 'cpu', showProgress: false, blockSize: 4, maxNumBatchedTokens: 16 } as const;

test('deepseek-v32 under swap preemption gives transformers\' greedy tokens: the indexer keys are swapped out and back with the latent', async () => {
  const llm = await LLM.load({ ...BASE, numKvBlocks: 24, preemptionMode: 'swap', swapSpace: 0.01 });
  try {
    const outputs = await llm.generate(fixture.oracle.prompts, GREEDY);
    outputs.forEach((out, i) => assert.deepEqual(out.outputs[0].tokenIds, fixture.oracle.greedy[i], `prompt ${i}`));
    assert.ok(llm.stats().numSwapsTotal > 0, 'the 24-block pool was meant to force swaps');
  } finally {
    await llm.close();
  }
});

test('deepseek-v32 with an int8 KV cache: every prompt batched, chunked and preempted gives the tokens it gives alone', async () => {
  const options = { ...BASE, kvCacheDtype: 'int8' } as const;
  const alone = await LLM.load(options);
  const expected: number[][] = [];
  try {
    for (const prompt of fixture.oracle.prompts) expected.push((await alone.generate([prompt], GREEDY))[0].outputs[0].tokenIds);
  } finally {
    await alone.close();
  }
  const crowded = await LLM.load({ ...options, numKvBlocks: 24 });
  try {
    const outputs = await crowded.generate(fixture.oracle.prompts, GREEDY);
    outputs.forEach((out, i) => assert.deepEqual(out.outputs[0].tokenIds, expected[i], `prompt ${i}`));
    assert.ok(outputs.some((o) => o.metrics.numPreemptions > 0), 'the 24-block pool was meant to force preemption');
  } finally {
    await crowded.close();
  }
});
