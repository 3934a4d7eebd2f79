import assert from 'node:assert/strict';
import type { CompletionOutput, RequestOutput } from '../../src/engine/outputs.ts';

/** Logprob gap below which bf16 rounding may flip the argmax (one bf16 step of a logit in [8, 16) is 0.0625). */
const NEAR_TIE = 0.1;

/**
 * Each output's first completion has the reference completion's greedy tokens up to a first
 * difference, and there takes one of the reference's top tokens whose raw logprob is within
 * NEAR_TIE of the token the reference took: a CUDA run whose batches round bf16 differently may
 * flip a near-tie, between two candidates or among several (bf16 logits tie often, and equal
 * logits go to the lower id), and later tokens follow another context and are not compared. The
 * reference must have been generated with `logprobs` (a candidate beyond its top list fails).
 * Logprobs are raw, before penalties: with `penalized` requests the flip is judged only between
 * tokens the penalties leave alone (in neither the prompt nor the output before it), whose raw gap
 * is their penalized gap. `what` prefixes the messages.
 */
export function assertGreedyUpToNearTie(outputs: RequestOutput[], expected: CompletionOutput[], what = '', penalized = false): void {
  outputs.forEach((output, i) => {
    const want = expected[i];
    const got = output.outputs[0].tokenIds;
    const step = got.findIndex((token, j) => token !== want.tokenIds[j]);
    if (step === -1) return;
    const at = `${what}prompt ${i}, step ${step}`;
    const { sampled, top } = want.logprobs![step];
    const taken = top.find((candidate) => candidate.tokenId === got[step]);
    assert.ok(taken !== undefined, `${at}: ${got[step]} is not among the reference's top ${top.length} (${top.map((c) => c.tokenId).join(', ')})`);
    const gap = Math.abs(sampled.logprob - taken.logprob);
    assert.ok(gap < NEAR_TIE, `${at}: ${got[step]} for the reference's ${sampled.tokenId}: a gap of ${gap} is no near-tie`);
    if (!penalized) return;
    const history = new Set([...output.promptTokenIds, ...got.slice(0, step)]);
    const touched = [sampled.tokenId, got[step]].filter((token) => history.has(token));
    assert.equal(touched.length, 0, `${at}: ${got[step]} for the reference's ${sampled.tokenId}, and the penalties touch ${touched.join(' and ')}: their raw gap is not their penalized one`);
  });
}
