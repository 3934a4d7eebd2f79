import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { EngineOptions } from '../src/config.ts';
import { CudaBackend } from '../src/backend/cuda/cuda-backend.ts';
import { LLM } from '../src/engine/llm.ts';
import type { RequestOutput } from '../src/engine/outputs.ts';
import { MODELS_DIR } from './helpers/oracle-fixtures.ts';
import { assertGreedyUpToNearTie } from './helpers/near-tie.ts';

// Speculative decoding on CUDA over keel-tiny: the draft model's proposal passes, its mirrored
// steps (graph-replayed for plain decodes) and verification chunks that run eagerly. In bf16 a
// verification row (a chunk through the prefill kernels) and a plain decode row (the decode
// kernels) may round apart, so greedy outputs must equal plain CUDA decoding's up to the first
// difference, and that difference must be a near-tie of plain decoding's candidates (near-tie.ts:
// with bf16 logits three candidates may sit within a step of each other, so five are reported).

const PROMPTS = ['def fibonacci(n):', 'import os\n', 'class Stack:\n', '# sum a list\n', 'for i in range(10):', 'x = [1, 2, 3]\nx = [1, 2, 3]\n'];
const BASE = { backend: 'cuda', showProgress: false, numKvBlocks: 256 } as const;
const GREEDY = { temperature: 0, maxTokens: 48, ignoreEos: true, logprobs: 5 } as const;

let plain: LLM;
let expected: RequestOutput[];
before(async () => {
  plain = await LLM.load(BASE);
  expected = await plain.generate(PROMPTS, GREEDY);
});
after(() => plain.close());

async function checkGreedy(config: EngineOptions): Promise<void> {
  const llm = await LLM.load({ ...BASE, ...config });
  try {
    const outputs = await llm.generate(PROMPTS, GREEDY);
    assertGreedyUpToNearTie(outputs, expected.map((e) => e.outputs[0]));
    const stats = llm.stats();
    assert.equal(stats.numFreeKvBlocks, stats.numKvBlocks, 'every block is free at the end');
    assert.ok(stats.speculation!.numAcceptedTokens > 0, `drafts were accepted: ${JSON.stringify(stats.speculation)}`);
  } finally {
    await llm.close();
  }
}

test('CUDA: keel-tiny with keel-tiny-draft decodes greedily as plain decoding does', async () => {
  await checkGreedy({ speculative: { model: join(MODELS_DIR, 'keel-tiny-draft'), numSpeculativeTokens: 4 } });
});

test("CUDA: keel-tiny-draft's proposal passes chain on the device and replay the draft model's graphs", async () => {
  // A speculative step's target and draft forwards run eagerly (verification chunks); its proposal
  // passes replay graphs, those after the first reading the draft before them on the device.
  const original = CudaBackend.prototype.replayForward;
  let chained = 0;
  CudaBackend.prototype.replayForward = function <R>(this: CudaBackend, step: Parameters<CudaBackend['replayForward']>[0], owner: object, forward: () => R): R {
    if (step.batch.tokenSources.some((source) => source >= 0)) chained++;
    return original.call(this, step, owner, forward) as R;
  };
  try {
    await checkGreedy({ speculative: { model: join(MODELS_DIR, 'keel-tiny-draft'), numSpeculativeTokens: 4 } });
  } finally {
    CudaBackend.prototype.replayForward = original;
  }
  assert.ok(chained > 0, 'proposal passes chained on the device replayed graphs');
});

test("CUDA: keel-tiny-draft with penalized requests chains its passes on the device (the drafts' penalties read from the draft history) and decodes as plain decoding does", async () => {
  const original = CudaBackend.prototype.replayForward;
  let chained = 0;
  CudaBackend.prototype.replayForward = function <R>(this: CudaBackend, step: Parameters<CudaBackend['replayForward']>[0], owner: object, forward: () => R): R {
    if (step.batch.tokenSources.some((source) => source >= 0)) chained++;
    return original.call(this, step, owner, forward) as R;
  };
  const llm = await LLM.load({ ...BASE, speculative: { model: join(MODELS_DIR, 'keel-tiny-draft'), numSpeculativeTokens: 4 } });
  try {
    for (const penalties of [{ repetitionPenalty: 1.2 }, { frequencyPenalty: 0.8, presencePenalty: 0.3 }]) {
      const params = { ...GREEDY, ...penalties };
      const want = await plain.generate(PROMPTS, params);
      assertGreedyUpToNearTie(await llm.generate(PROMPTS, params), want.map((e) => e.outputs[0]), `${JSON.stringify(penalties)}: `, penalties);
    }
  } finally {
    CudaBackend.prototype.replayForward = original;
    await llm.close();
  }
  assert.ok(chained > 0, 'proposal passes of penalized requests chained on the device');
});

test('CUDA: keel-tiny with keel-tiny-draft and CUDA graphs off', async () => {
  await checkGreedy({ speculative: { model: join(MODELS_DIR, 'keel-tiny-draft'), numSpeculativeTokens: 4 }, enforceEager: true });
});

test('CUDA: keel-tiny with n-gram drafts decodes greedily as plain decoding does', async () => {
  await checkGreedy({ speculative: { method: 'ngram', numSpeculativeTokens: 4, ngramMin: 1, ngramMax: 3 } });
});

test('CUDA: keel-tiny with n-gram draft trees (tree-masked verification, accepted paths moved into place) decodes greedily as plain decoding does', async () => {
  await checkGreedy({ speculative: { method: 'ngram', numSpeculativeTokens: 4, ngramMin: 1, ngramMax: 3, ngramBranches: 3 } });
});
