import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { LLM } from '../src/engine/llm.ts';
import type { CompletionOutput, RequestOutput } from '../src/engine/outputs.ts';
import { assertGreedyUpToNearTie, assertGreedyUpToNearTieOrFloat32 } from './helpers/near-tie.ts';
import { FIXTURES_DIR } from './helpers/oracle-fixtures.ts';

// The GPU suites' rule for a greedy run that parts from its bf16 reference, checked on the CPU: a
// departure past a near-tie stands only where float32 picks the run's token.

const MODEL = join(FIXTURES_DIR, 'glm4-moe');
const PROMPT = [90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100, 101];

/** A reference that took `other` at step 1 where float32 takes the run's token, with `other` alone in its top list. */
function referenceFlippedAt1(run: CompletionOutput, other: number): CompletionOutput {
  const flipped = { tokenId: other, token: '', logprob: -1 };
  const logprobs = run.logprobs!.map((position, step) => (step === 1 ? { sampled: flipped, top: [flipped] } : position));
  return { ...run, tokenIds: run.tokenIds.map((t, step) => (step === 1 ? other : t)), logprobs };
}

test('a departure beyond a near-tie passes only where float32 on the CPU picks the token the run took', async () => {
  const llm = await LLM.load({ model: MODEL, backend: 'cpu', showProgress: false, numKvBlocks: 64 });
  let run: RequestOutput;
  try {
    [run] = await llm.generate([PROMPT], { temperature: 0, maxTokens: 4, ignoreEos: true, logprobs: 2 });
  } finally {
    await llm.close();
  }
  const tokens = run.outputs[0].tokenIds;
  const other = tokens[1] === 7 ? 8 : 7;
  const reference = referenceFlippedAt1(run.outputs[0], other);
  assert.throws(() => assertGreedyUpToNearTie([run], [reference]), /is not among the reference's top 1/);
  await assertGreedyUpToNearTieOrFloat32([run], [reference], MODEL);
  // The run's token swapped for another one that float32 does not pick: refused, naming float32's.
  const wrong: RequestOutput = { ...run, outputs: [{ ...run.outputs[0], tokenIds: tokens.map((t, step) => (step === 1 ? other + 1 : t)) }] };
  await assert.rejects(assertGreedyUpToNearTieOrFloat32([wrong], [reference], MODEL), new RegExp(`float32 on the CPU picks ${tokens[1]} there`));
});
