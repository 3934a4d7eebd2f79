import assert from 'node:assert/strict';
import type { EngineOptions } from '../../src/config.ts';
import { LLM } from '../../src/engine/llm.ts';
import type { RequestOutput } from '../../src/engine/outputs.ts';
import type { SamplingParams } from '../../src/sampling/sampling-params.ts';

// Speculative methods checked against plain decoding on the oracle fixtures: every kind of request
// at once (greedy, seeded with top-k / top-p / min-p, penalties, n = 2, logprobs, a one-token
// request); each output must equal plain decoding's token for token.

/** Token-id prompts (vocabulary 256), some repetitive. */
export const PARITY_PROMPTS = [
  [5, 17, 99, 3, 42],
  [200, 13, 13, 77, 5, 9, 120, 61],
  [7, 7, 7, 8, 9, 10, 7, 7, 7, 8],
  [31, 250, 4],
  [90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100, 101],
];

/** `prompts`: token-id prompts within the model's vocabulary (PARITY_PROMPTS' ids reach 250). */
export async function mixedRequests(llm: LLM, prompts: readonly number[][] = PARITY_PROMPTS): Promise<RequestOutput[]> {
  const mixed: Partial<SamplingParams>[] = [
    { temperature: 0, maxTokens: 40, ignoreEos: true },
    { temperature: 0.8, seed: 11, maxTokens: 28, ignoreEos: true },
    { temperature: 1, seed: 5, maxTokens: 24, topK: 20, ignoreEos: true },
    { temperature: 0.7, seed: 3, maxTokens: 18, n: 2, ignoreEos: true },
    { temperature: 0, maxTokens: 32, ignoreEos: true, repetitionPenalty: 1.5, frequencyPenalty: 0.7 },
    { temperature: 0.9, seed: 8, maxTokens: 26, presencePenalty: 1.2, topP: 0.8, minP: 0.05, logprobs: 3, ignoreEos: true },
    { temperature: 0, maxTokens: 36, ignoreEos: true, logprobs: 2 },
    { temperature: 0, maxTokens: 1 },
  ];
  return Promise.all(mixed.map((params, i) => llm.generate([prompts[i % prompts.length]], params).then(([o]) => o)));
}

export const completions = (outputs: RequestOutput[]) => outputs.map((o) => o.outputs.map((c) => ({ tokenIds: c.tokenIds, finishReason: c.finishReason, logprobs: c.logprobs })));

/**
 * Loads an engine with `options` over `base`, checks that the mixed requests give exactly what
 * `plain` gives, that every block is free at the end and that speculation reports its steps
 * (with `accepts`, that drafts were both accepted and rejected); returns the engine.
 */
export async function checkUnchanged(plain: LLM, base: EngineOptions, options: EngineOptions, accepts = true, prompts: readonly number[][] = PARITY_PROMPTS): Promise<LLM> {
  const expected = await mixedRequests(plain, prompts);
  const llm = await LLM.load({ ...base, ...options });
  try {
    const outputs = await mixedRequests(llm, prompts);
    assert.deepEqual(completions(outputs), completions(expected));
    const stats = llm.stats();
    assert.equal(stats.numFreeKvBlocks, stats.numKvBlocks, 'every block is free at the end');
    const speculation = stats.speculation!;
    assert.ok(speculation.numDraftTokens > 0, `drafts were proposed: ${JSON.stringify(speculation)}`);
    if (accepts) assert.ok(speculation.numAcceptedTokens > 0 && speculation.numAcceptedTokens < speculation.numDraftTokens, `drafts were accepted and rejected: ${JSON.stringify(speculation)}`);
    assert.ok(outputs[0].metrics.speculation !== null && outputs[0].metrics.speculation.numSteps > 0, 'a request reports its speculation');
    console.log(`${JSON.stringify(options.speculative)}: mean accepted length ${speculation.meanAcceptedLength?.toFixed(2)}, per depth ${speculation.acceptanceRateByPosition.map((r) => r.toFixed(2)).join(' ')}`);
    return llm;
  } catch (error) {
    await llm.close();
    throw error;
  }
}
