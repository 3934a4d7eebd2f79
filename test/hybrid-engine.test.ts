import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { KeelError } from '../src/errors.ts';
import { LLM } from '../src/engine/llm.ts';
import { loadEngine } from '../src/engine/load-engine.ts';
import { FIXTURES_DIR, listOracleFixtures } from './helpers/oracle-fixtures.ts';

// A hybrid model's Gated DeltaNet (or Mamba-2) layers keep one recurrent state per sequence (a state slot), not
// entries per token: what needs a prefix's history or a copy of a sequence is refused by name,
// prefix caching needs state checkpoints (test/hybrid-prefix-cache.test.ts), and a sequence takes
// turns for slots as it does for blocks.

const FIXTURE = join(FIXTURES_DIR, 'qwen3.5-hybrid');
const oracle = listOracleFixtures().find((f) => f.name === 'qwen3.5-hybrid')!.oracle;
const GREEDY = { temperature: 0, ignoreEos: true } as const;

async function rejectsWith(options: Parameters<typeof LLM.load>[0], ...fragments: string[]): Promise<void> {
  await assert.rejects(LLM.load({ model: FIXTURE, showProgress: false, ...options }), (error: unknown) => {
    assert.ok(error instanceof KeelError, `expected a KeelError, got ${error}`);
    for (const f of fragments) assert.ok(error.message.includes(f), `"${error.message}" lacks "${f}"`);
    return true;
  });
}

test('features that need a prefix\'s history are refused by name', async () => {
  await rejectsWith({ backend: 'cpu', speculative: { model: FIXTURE, numSpeculativeTokens: 2 } }, 'speculative decoding other than n-gram and MTP chains', '--speculative-method draft', 'qwen3_5_text');
  await rejectsWith({ backend: 'cpu', speculative: { method: 'ngram', numSpeculativeTokens: 2, ngramMin: 1, ngramMax: 2, ngramBranches: 2 } }, '--ngram-branches 2');
  await rejectsWith({ backend: 'cpu', speculative: { method: 'mtp', numSpeculativeTokens: 2, treeWidth: 2 } }, 'other than n-gram and MTP chains (--speculative-tree-width 2)');
  await rejectsWith({ backend: 'cpu', preemptionMode: 'swap' }, 'preemptionMode swap');
  await rejectsWith({ backend: 'cpu', kvOffloadGb: 0.01 }, 'the host tier of the prefix cache (kvOffloadGb)', 'qwen3_5_text');
});

test('a Mamba-2 hybrid (Granite 4.0) keeps a state per sequence too: the same features are refused by name', async () => {
  const granite = { model: join(FIXTURES_DIR, 'granite4-hybrid'), backend: 'cpu' } as const;
  await rejectsWith({ ...granite, preemptionMode: 'swap' }, 'preemptionMode swap', 'granitemoehybrid', 'Mamba-2');
  await rejectsWith({ ...granite, kvOffloadGb: 0.01 }, 'the host tier of the prefix cache (kvOffloadGb)', 'granitemoehybrid');
});

test('prefix caching turns itself off without state checkpoints, one slot per sequence holds max-num-seqs sequences at once, and forks copy or recompute a state', async () => {
  for (const numStateCheckpoints of [0, 4]) {
    const loaded = await loadEngine({ model: FIXTURE, backend: 'cpu', showProgress: false, numKvBlocks: 64, numStateCheckpoints });
    try {
      assert.equal(loaded.config.enablePrefixCaching, numStateCheckpoints > 0);
    } finally {
      loaded.backend.dispose();
    }
  }
  // Two slots for four prompts: the others wait for a slot, and every continuation is transformers'.
  const llm = await LLM.load({ model: FIXTURE, backend: 'cpu', showProgress: false, numKvBlocks: 64, maxNumSeqs: 2 });
  try {
    const outputs = await llm.generate(oracle.prompts, { ...GREEDY, maxTokens: oracle.max_new_tokens });
    outputs.forEach((output, i) => assert.deepEqual(output.outputs[0].tokenIds, oracle.greedy[i], `prompt ${i}`));
    // n = 3 forks twice after the prefill: one child gets the last free slot and a copy of the
    // parent's state, the other finds none and recomputes; all three continue as transformers does.
    const [forked] = await llm.generate([oracle.prompts[1]], { ...GREEDY, n: 3, maxTokens: oracle.max_new_tokens });
    forked.outputs.forEach((o, i) => assert.deepEqual(o.tokenIds, oracle.greedy[1], `completion ${i}`));
    assert.equal(llm.stats().numFreeKvBlocks, llm.stats().numKvBlocks, 'every completion\'s blocks are freed');
  } finally {
    await llm.close();
  }
});

test('Quest sparse attention applies to the full-attention layers alone: covered sequences give transformers\' tokens, selected ones the same batched or alone', async () => {
  // 8 blocks of 4 tokens: prompt 0 and its continuation (29 tokens) fit whole; the longer ones' decodes select.
  const quest = { model: FIXTURE, backend: 'cpu', showProgress: false, blockSize: 4, sparseAttention: 'quest', sparseTokenBudget: 32, sparseWindowTokens: 8 } as const;
  const run = async (prompts: number[][]) => {
    const llm = await LLM.load(quest);
    try {
      return (await llm.generate(prompts, { ...GREEDY, maxTokens: oracle.max_new_tokens })).map((o) => o.outputs[0].tokenIds);
    } finally {
      await llm.close();
    }
  };
  const batched = await run(oracle.prompts);
  assert.deepEqual(batched[0], oracle.greedy[0], 'a sequence inside the budget attends densely');
  for (const [i, prompt] of oracle.prompts.entries()) assert.deepEqual((await run([prompt]))[0], batched[i], `prompt ${i} alone`);
});

test('n-gram speculation rewinds each rank\'s part of the state after a rejection: TP 2 and PP 2 give transformers\' tokens', async () => {
  for (const parallel of [{ tensorParallelSize: 2 }, { pipelineParallelSize: 2 }]) {
    const llm = await LLM.load({ model: FIXTURE, backend: 'cpu', showProgress: false, numKvBlocks: 64, ...parallel, speculative: { method: 'ngram', numSpeculativeTokens: 4, ngramMin: 1, ngramMax: 3 } });
    try {
      const outputs = await llm.generate(oracle.prompts, { ...GREEDY, maxTokens: oracle.max_new_tokens });
      outputs.forEach((output, i) => assert.deepEqual(output.outputs[0].tokenIds, oracle.greedy[i], `${JSON.stringify(parallel)}, prompt ${i}`));
      const speculation = llm.stats().speculation!;
      assert.ok(speculation.numAcceptedTokens > 0 && speculation.numAcceptedTokens < speculation.numDraftTokens, 'drafts were both kept and rejected');
    } finally {
      await llm.close();
    }
  }
});
