import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { EngineOptions } from '../src/config.ts';
import { LLM } from '../src/engine/llm.ts';
import { FIXTURES_DIR } from './helpers/oracle-fixtures.ts';
import { checkUnchanged, completions, mixedRequests } from './helpers/speculative-parity.ts';

// Quest's sparse attention (docs/long-context.md) under EAGLE and Medusa heads' speculation on
// llama-gqa (tools/oracle/make_spec_heads.py): its second layer sparse, in 4-token blocks, a budget
// of 4 blocks of contexts growing to 50 tokens, a recent window of 2 blocks (which reaches past
// trees 3 deep). Every kind of request gives the tokens plain sparse decoding gives: each verified
// token, of a chain or a tree, selects its blocks as the decode of its path would.

const TARGET = join(FIXTURES_DIR, 'llama-gqa');
const HEADS = join(FIXTURES_DIR, 'spec-heads');
const QUEST: EngineOptions = { sparseAttention: 'quest', sparseTokenBudget: 16, sparseSinkTokens: 4, sparseWindowTokens: 8, sparseDenseLayers: [0] };
const BASE = { model: TARGET, backend: 'cpu', showProgress: false, numKvBlocks: 128, blockSize: 4, asyncScheduling: false, ...QUEST } as const;

let plain: LLM;
before(async () => {
  plain = await LLM.load(BASE);
});
after(() => plain.close());

for (const [method, dir, treeWidth] of [['eagle', 'eagle-llama-gqa', 1], ['eagle3', 'eagle3-llama-gqa', 1], ['eagle', 'eagle-llama-gqa', 3], ['eagle3', 'eagle3-llama-gqa', 2]] as const) {
  test(`${method} ${treeWidth === 1 ? 'chains' : `trees ${treeWidth} wide`} verified sparsely change no output of sparse decoding`, async () => {
    const llm = await checkUnchanged(plain, BASE, { speculative: { method, model: join(HEADS, dir), numSpeculativeTokens: 3, treeWidth } });
    await llm.close();
  });
}

test('Medusa trees verified sparsely change no output of sparse decoding', async () => {
  const llm = await checkUnchanged(plain, BASE, { speculative: { method: 'medusa', model: join(HEADS, 'medusa-llama-gqa'), numSpeculativeTokens: 2 } });
  await llm.close();
});

test('the budget leaves blocks out of these decodes', async () => {
  const dense = await LLM.load({ ...BASE, sparseAttention: null, sparseTokenBudget: null });
  try {
    assert.notDeepEqual(completions(await mixedRequests(plain)), completions(await mixedRequests(dense)));
  } finally {
    await dense.close();
  }
});
