import assert from 'node:assert/strict';
import type { CompletionOutput, RequestOutput } from '../../src/engine/outputs.ts';

/** Logprob gap below which bf16 rounding may flip the argmax. */
const NEAR_TIE = 0.1;

/**
 * Each output's first completion has the reference completion's greedy tokens up to a first
 * difference, and there takes the reference's runner-up at a near-tie: a CUDA run whose batches
 * round bf16 differently may flip one (later tokens follow another context and are not compared).
 * The reference must have been generated with `logprobs` ≥ 2. `what` prefixes the messages.
 */
export function assertGreedyUpToNearTie(outputs: RequestOutput[], expected: CompletionOutput[], what = ''): void {
  outputs.forEach((output, i) => {
    const want = expected[i];
    const got = output.outputs[0].tokenIds;
    const step = got.findIndex((token, j) => token !== want.tokenIds[j]);
    if (step === -1) return;
    const [first, second] = want.logprobs![step].top;
    assert.equal(got[step], second.tokenId, `${what}prompt ${i}, step ${step}: ${got[step]} is not the reference's runner-up`);
    assert.ok(first.logprob - second.logprob < NEAR_TIE, `${what}prompt ${i}, step ${step}: a gap of ${first.logprob - second.logprob} is no near-tie`);
  });
}
