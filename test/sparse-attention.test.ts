import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import type { EngineOptions } from '../src/config.ts';
import { CpuBackend } from '../src/backend/cpu/cpu-backend.ts';
import { LLM } from '../src/engine/llm.ts';
import { MODELS_DIR } from './helpers/oracle-fixtures.ts';
import { TestRandom, testSeed } from './helpers/cpu-random.ts';

// keel-tiny (4 layers, GQA 6/2) with Quest's sparse decode attention (docs/long-context.md).
const seed = testSeed('sparse-attention-engine');
const random = new TestRandom(seed);
const GREEDY = { temperature: 0, ignoreEos: true } as const;
const prompts = [300, 220, 90].map((n) => Array.from({ length: n }, () => random.int(10, 8000)));
const QUEST: EngineOptions = { sparseAttention: 'quest', sparseTokenBudget: 128, sparseDenseLayers: [0] };

async function tokens(options: Parameters<typeof LLM.load>[0], ids: number[][], maxTokens = 24): Promise<number[][]> {
  const llm = await LLM.load({ backend: 'cpu', showProgress: false, ...options });
  try {
    return (await llm.generate(ids, { ...GREEDY, maxTokens })).map((o) => o.outputs[0].tokenIds);
  } finally {
    await llm.close();
  }
}

test(`a budget covering every sequence gives dense attention's tokens (seed ${seed})`, async () => {
  assert.deepEqual(await tokens({ sparseAttention: 'quest', sparseTokenBudget: 2048 }, prompts), await tokens({}, prompts));
});

test(`sparse decodes give the same tokens batched or alone, chunked or not, and from the prefix cache (seed ${seed})`, async () => {
  const batched = await tokens(QUEST, prompts);
  for (const [i, prompt] of prompts.entries()) assert.deepEqual((await tokens(QUEST, [prompt]))[0], batched[i], `prompt ${i} alone`);
  assert.deepEqual(await tokens({ ...QUEST, maxNumBatchedTokens: 40 }, prompts), batched, 'chunked prefill');
  // A rerun in one engine takes its prompt's blocks (and their key summaries) from the prefix cache.
  const llm = await LLM.load({ backend: 'cpu', showProgress: false, ...QUEST });
  try {
    const first = await llm.generate([prompts[0]], { ...GREEDY, maxTokens: 24 });
    const again = await llm.generate([prompts[0]], { ...GREEDY, maxTokens: 24 });
    assert.ok(again[0].metrics!.numCachedTokens! > 0, 'the rerun hits the prefix cache');
    assert.deepEqual(again[0].outputs[0].tokenIds, first[0].outputs[0].tokenIds);
    assert.deepEqual(first[0].outputs[0].tokenIds, batched[0]);
  } finally {
    await llm.close();
  }
  assert.notDeepEqual(batched, await tokens({}, prompts), 'a budget of 128 tokens changes some decode');
});

test('sparse attention refuses what it cannot run, by name', async () => {
  const load = (options: Parameters<typeof LLM.load>[0]) => LLM.load({ backend: 'cpu', showProgress: false, ...options });
  await assert.rejects(load({ sparseAttention: 'quest' }), /needs a token budget/);
  await assert.rejects(load({ sparseTokenBudget: 256 }), /sparseTokenBudget needs sparseAttention quest/);
  await assert.rejects(load({ sparseAttention: 'quest', sparseTokenBudget: 64 }), /fewer than the 1 sink and 4 recent-window blocks.*at least 80/);
  await assert.rejects(load({ sparseAttention: 'quest', sparseTokenBudget: 256, sparseWindowTokens: 0 }), /sparseWindowTokens must be a positive integer/);
  await assert.rejects(load({ sparseAttention: 'quest', sparseTokenBudget: 256, sparseDenseLayers: [4] }), /dense layer 4 is not a layer of this model/);
  await assert.rejects(load({ sparseAttention: 'quest', sparseTokenBudget: 256, streamingSinks: 4, streamingWindow: 252 }), /does not combine with StreamingLLM/);
  await assert.rejects(
    load({ sparseAttention: 'quest', sparseTokenBudget: 256, sparseWindowTokens: 16, speculative: { method: 'ngram', ngramBranches: 3, numSpeculativeTokens: 4 } }),
    /draft tree 4 deep only when the recent window reaches past it: give --sparse-window-tokens at least 32/,
  );
});

// Prompts that repeat a random phrase, so that n-gram lookup finds drafts; long enough that the
// budget of 128 tokens leaves blocks out of every sparse decode.
const repeating = [40, 56, 24].map((n, i) => {
  const phrase = Array.from({ length: n }, () => random.int(10, 8000));
  return Array.from({ length: 280 + 16 * i }, (_, j) => phrase[j % n]);
});

test(`verification chunks attend sparsely, each token as its decode would: n-gram, draft-model and self-speculation give plain sparse decoding's tokens (seed ${seed})`, async () => {
  const expected = await tokens(QUEST, repeating, 40);
  const methods: EngineOptions['speculative'][] = [
    { method: 'ngram', numSpeculativeTokens: 4, ngramMin: 1, ngramMax: 3 },
    { model: join(MODELS_DIR, 'keel-tiny-draft'), numSpeculativeTokens: 3 },
    { method: 'self', selfSpecLayers: 3, numSpeculativeTokens: 2 },
  ];
  for (const speculative of methods) {
    const llm = await LLM.load({ backend: 'cpu', showProgress: false, ...QUEST, speculative });
    try {
      const outputs = await llm.generate(repeating, { ...GREEDY, maxTokens: 40 });
      assert.deepEqual(outputs.map((o) => o.outputs[0].tokenIds), expected, `${JSON.stringify(speculative)}: the tokens of plain sparse decoding`);
      const { speculation } = llm.stats();
      assert.ok(speculation!.numAcceptedTokens > 0, `${JSON.stringify(speculative)}: drafts were accepted (${JSON.stringify(speculation)})`);
    } finally {
      await llm.close();
    }
  }
  // Verification beside prefill chunks (of 40 tokens and more: a prompt token alone in its chunk
  // would attend sparsely, as a decode, so the chunks are cut where no verification can leave one
  // alone), and from the prefix cache.
  assert.deepEqual(await tokens({ ...QUEST, speculative: methods[0], maxNumBatchedTokens: 320 }, repeating, 40), expected, 'n-gram, chunked prefill');
  const llm = await LLM.load({ backend: 'cpu', showProgress: false, ...QUEST, speculative: methods[0] });
  try {
    await llm.generate(repeating, { ...GREEDY, maxTokens: 40 });
    const again = await llm.generate(repeating, { ...GREEDY, maxTokens: 40 });
    assert.ok(again.every((o) => o.metrics!.numCachedTokens! > 0), 'the rerun hits the prefix cache');
    assert.deepEqual(again.map((o) => o.outputs[0].tokenIds), expected, 'n-gram, from the prefix cache');
  } finally {
    await llm.close();
  }
  // Verification under a covering budget is dense verification.
  const covering = await tokens({ sparseAttention: 'quest', sparseTokenBudget: 2048, speculative: methods[0] }, repeating, 40);
  assert.deepEqual(covering, await tokens({}, repeating, 40), 'a covering budget gives dense tokens with speculation');
});

test(`n-gram draft trees verified sparsely give plain sparse decoding's tokens, accepting other branches than the first (seed ${seed})`, async () => {
  // Code, whose repeated n-grams go on in several ways, so that trees branch and accepted paths
  // leave the first branch (their K/V moved, their blocks' summaries recomputed); a recent window
  // of two blocks, the least that reaches past trees 4 deep.
  const text = readFileSync(join(import.meta.dirname, '..', 'tools', 'oracle', 'make_fixtures.py'), 'utf8');
  const code = [text.slice(0, 1400), text.slice(3000, 4200), text.slice(6000, 7000)];
  const narrow = { backend: 'cpu', showProgress: false, ...QUEST, sparseWindowTokens: 32 } as const;
  const run = async (options: EngineOptions) => {
    const llm = await LLM.load({ ...narrow, ...options });
    try {
      const outputs = await llm.generate(code, { ...GREEDY, maxTokens: 72 });
      return { tokens: outputs.map((o) => o.outputs[0].tokenIds), speculation: llm.stats().speculation };
    } finally {
      await llm.close();
    }
  };
  const expected = await run({});
  const original = CpuBackend.prototype.copySlots;
  let moves = 0;
  CpuBackend.prototype.copySlots = function (this: CpuBackend, cache, src, dst) {
    moves += src.length;
    return original.call(this, cache, src, dst);
  };
  try {
    const tree = await run({ speculative: { method: 'ngram', numSpeculativeTokens: 4, ngramMin: 1, ngramMax: 3, ngramBranches: 3 } });
    assert.deepEqual(tree.tokens, expected.tokens);
    assert.ok(tree.speculation!.numAcceptedTokens > 0, `drafts were accepted (${JSON.stringify(tree.speculation)})`);
  } finally {
    CpuBackend.prototype.copySlots = original;
  }
  assert.ok(moves > 0, 'some accepted path left the first branch, and its K/V were moved into place');
});

for (const kvCacheDtype of ['int8', 'fp8'] as const) {
  test(`with an ${kvCacheDtype} KV cache, a covering budget gives dense ${kvCacheDtype} attention's tokens, and n-gram verification plain sparse decoding's (seed ${seed})`, async () => {
    assert.deepEqual(await tokens({ kvCacheDtype, sparseAttention: 'quest', sparseTokenBudget: 2048 }, prompts), await tokens({ kvCacheDtype }, prompts), 'covering budget');
    const sparse = await tokens({ kvCacheDtype, ...QUEST }, repeating, 32);
    assert.deepEqual(await tokens({ kvCacheDtype, ...QUEST, speculative: { method: 'ngram', numSpeculativeTokens: 4, ngramMin: 1, ngramMax: 3 } }, repeating, 32), sparse, 'n-gram speculation');
    assert.notDeepEqual(sparse, await tokens({ kvCacheDtype }, repeating, 32), `the budget changes some ${kvCacheDtype} decode`);
  });
}
