import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import type { EngineOptions } from '../src/config.ts';
import { LLM } from '../src/engine/llm.ts';
import { TestRandom, testSeed } from './helpers/cpu-random.ts';
import { assertGreedyUpToNearTie } from './helpers/near-tie.ts';
import { MODELS_DIR } from './helpers/oracle-fixtures.ts';

// Quest's sparse attention on CUDA over keel-tiny (test/sparse-attention.test.ts is the CPU side):
// decode steps replayed as CUDA graphs, and speculative verification chains and trees, each token
// a decode of its own in the sparse layers (AttentionPlan.sparse).

const seed = testSeed('sparse-attention-engine-gpu');
const random = new TestRandom(seed);
const BASE = { backend: 'cuda', showProgress: false } as const;
const QUEST: EngineOptions = { sparseAttention: 'quest', sparseTokenBudget: 128, sparseDenseLayers: [0] };
const GREEDY = { temperature: 0, maxTokens: 64, ignoreEos: true, logprobs: 2 } as const;
// Repeating phrases, so that n-gram lookup finds drafts; long enough that the budget leaves blocks out.
const prompts = [40, 56, 24].map((n, i) => {
  const phrase = Array.from({ length: n }, () => random.int(10, 8000));
  return Array.from({ length: 600 + 16 * i }, (_, j) => phrase[j % n]);
});

async function generate(options: EngineOptions) {
  const llm = await LLM.load({ ...BASE, ...options });
  try {
    const outputs = await llm.generate(prompts, GREEDY);
    return { outputs, speculation: llm.stats().speculation };
  } finally {
    await llm.close();
  }
}

test(`sparse decode steps replayed as CUDA graphs give the eager steps' tokens (seed ${seed})`, async () => {
  const graphs = await generate(QUEST);
  const eager = await generate({ ...QUEST, enforceEager: true });
  assert.deepEqual(graphs.outputs.map((o) => o.outputs[0].tokenIds), eager.outputs.map((o) => o.outputs[0].tokenIds));
});

test(`n-gram chains and trees and draft-model verification attend sparsely: plain sparse decoding's tokens up to bf16 near-ties (seed ${seed})`, async () => {
  const plain = await generate(QUEST);
  const dense = await generate({});
  assert.notDeepEqual(plain.outputs.map((o) => o.outputs[0].tokenIds), dense.outputs.map((o) => o.outputs[0].tokenIds), 'the budget changes some decode');
  const speculatives = [
    { method: 'ngram', numSpeculativeTokens: 4, ngramMin: 1, ngramMax: 3 },
    { method: 'ngram', numSpeculativeTokens: 4, ngramMin: 1, ngramMax: 3, ngramBranches: 3 },
    { model: join(MODELS_DIR, 'keel-tiny-draft'), numSpeculativeTokens: 3 },
  ] as const;
  for (const speculative of speculatives) {
    const run = await generate({ ...QUEST, speculative });
    assert.ok(run.speculation!.numAcceptedTokens > 0, `drafts were accepted: ${JSON.stringify(run.speculation)}`);
    assertGreedyUpToNearTie(run.outputs, plain.outputs.map((o) => o.outputs[0]), `${JSON.stringify(speculative)}: `);
  }
});

test(`with int8 and fp8 KV caches, a covering budget decodes as dense attention does, up to bf16 near-ties (seed ${seed})`, async () => {
  for (const kvCacheDtype of ['int8', 'fp8'] as const) {
    const dense = await generate({ kvCacheDtype });
    const covering = await generate({ kvCacheDtype, sparseAttention: 'quest', sparseTokenBudget: 4096 });
    assertGreedyUpToNearTie(covering.outputs, dense.outputs.map((o) => o.outputs[0]), `${kvCacheDtype}: `);
  }
});
