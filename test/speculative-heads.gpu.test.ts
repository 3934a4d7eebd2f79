import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { LLM } from '../src/engine/llm.ts';
import { FIXTURES_DIR } from './helpers/oracle-fixtures.ts';
import { assertGreedyUpToNearTie } from './helpers/near-tie.ts';

// Medusa heads on CUDA over llama-gqa (float32 checkpoint run in bf16): the heads' residual blocks
// (silu), the gather of each sequence's hidden row and the tree-masked verification. Greedy
// outputs must equal plain CUDA decoding's up to a near-tie (see speculative-decoding.gpu.test.ts).

const TARGET = join(FIXTURES_DIR, 'llama-gqa');
const MEDUSA_DIR = join(FIXTURES_DIR, 'spec-heads', 'medusa-llama-gqa');
const BASE = { model: TARGET, backend: 'cuda', showProgress: false, numKvBlocks: 128 } as const;
const PROMPTS = [[5, 17, 99, 3, 42], [7, 7, 7, 8, 9, 10, 7, 7, 7, 8], [90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100, 101]];
const GREEDY = { temperature: 0, maxTokens: 40, ignoreEos: true, logprobs: 2 } as const;

test('CUDA: Medusa heads on llama-gqa decode greedily as plain decoding does, accepting drafts', async () => {
  const plain = await LLM.load(BASE);
  const expected = await plain.generate(PROMPTS, GREEDY);
  await plain.close();
  const llm = await LLM.load({ ...BASE, speculative: { method: 'medusa', model: MEDUSA_DIR, numSpeculativeTokens: 3 } });
  try {
    const outputs = await llm.generate(PROMPTS, GREEDY);
    assertGreedyUpToNearTie(outputs, expected.map((e) => e.outputs[0]));
    const stats = llm.stats();
    assert.equal(stats.numFreeKvBlocks, stats.numKvBlocks, 'every block is free at the end');
    assert.ok(stats.speculation!.numAcceptedTokens > 0, `drafts were accepted: ${JSON.stringify(stats.speculation)}`);
  } finally {
    await llm.close();
  }
});
