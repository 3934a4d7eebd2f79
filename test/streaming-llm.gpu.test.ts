import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LLM } from '../src/engine/llm.ts';
import { assertGreedyUpToNearTie } from './helpers/near-tie.ts';

// StreamingLLM on CUDA over keel-tiny (test/streaming-llm.test.ts is the CPU side): the queries
// rotated inside the attention kernels, sink passes in prefill tiles and decode partitions, CUDA
// graphs over growing block tables with freed (null) entries.

const BASE = { backend: 'cuda', showProgress: false } as const;
const PROMPTS = ['def fibonacci(n):', 'import os\n', 'class Stack:\n', '# sum a list\n'];

test('keel-tiny generates 3,000 tokens per request with sinks 4 and window 252, four requests in a 96-block pool', async () => {
  const numKvBlocks = 96;
  const llm = await LLM.load({ ...BASE, streamingSinks: 4, streamingWindow: 252, numKvBlocks, maxNumBatchedTokens: 64 });
  try {
    const outputs = await llm.generate(PROMPTS, { temperature: 0.8, seed: 1, maxTokens: 3000, ignoreEos: true });
    for (const out of outputs) {
      assert.equal(out.outputs[0].tokenIds.length, 3000);
      assert.equal(out.outputs[0].finishReason, 'length');
    }
    assert.equal(llm.stats().numFreeKvBlocks, numKvBlocks);
  } finally {
    await llm.close();
  }
});

test('with a window that holds every sequence, streaming decodes as plain CUDA decoding does, up to bf16 near-ties', async () => {
  const greedy = { temperature: 0, maxTokens: 200, ignoreEos: true, logprobs: 2 } as const;
  const plain = await LLM.load(BASE);
  const streaming = await LLM.load({ ...BASE, streamingSinks: 4, streamingWindow: 1000 });
  try {
    const expected = await plain.generate(PROMPTS, greedy);
    const outputs = await streaming.generate(PROMPTS, greedy);
    assertGreedyUpToNearTie(outputs, expected.map((e) => e.outputs[0]));
  } finally {
    await plain.close();
    await streaming.close();
  }
});
