import assert from 'node:assert/strict';
import { LLM } from '../../src/engine/llm.ts';
import type { CompletionOutput, RequestOutput } from '../../src/engine/outputs.ts';

/**
 * Logprob gap up to which bf16 rounding may flip the argmax between two runs: one bf16 step of a
 * logit in [8, 16) is 0.0625, and each run rounds both logits of the pair, so the reference's gap can
 * sit two steps (0.125) from the other run's; keel-tiny's draft case on CUDA parted at exactly that
 * gap on the H200 and the H100 alike.
 */
const NEAR_TIE = 0.13;

/**
 * Each output's first completion has the reference completion's greedy tokens up to a first
 * difference, and there takes one of the reference's top tokens whose raw logprob is within
 * NEAR_TIE of the token the reference took: a CUDA run whose batches round bf16 differently may
 * flip a near-tie, between two candidates or among several (bf16 logits tie often, and equal
 * logits go to the lower id), and later tokens follow another context and are not compared. The
 * reference must have been generated with `logprobs` (a candidate beyond its top list fails).
 * Logprobs are raw, before penalties: with `penalties` the gap judged is the penalized one. The
 * presence and frequency penalties subtract from a logit what the output so far holds of its token,
 * so a raw gap (logprobs part as logits do) less the two penalties' difference is the penalized
 * gap; a repetition penalty divides or multiplies the logit itself, which logprobs do not give, so
 * with one the flip is judged only between tokens it leaves alone (in neither the prompt nor the
 * output before it). `what` prefixes the messages.
 */
export function assertGreedyUpToNearTie(outputs: RequestOutput[], expected: CompletionOutput[], what = '', penalties: Penalties | null = null): void {
  outputs.forEach((output, i) => {
    const failure = nearTieFailure(output, expected[i], `${what}prompt ${i}`, penalties);
    assert.ok(failure === null, failure ?? '');
  });
}

/**
 * assertGreedyUpToNearTie, where a departure that is no near-tie of the reference's may still be
 * settled by float32: the CPU backend, given the prompt and the tokens both runs share, picks the
 * token `outputs` picked. The reference's own rounding flipped the choice then (a bf16 MoE expert
 * choice its batch shape rounded the other way moves the logits further than a near-tie's gap),
 * and the run under test is the one that agrees with the float32 model.
 */
export async function assertGreedyUpToNearTieOrFloat32(outputs: RequestOutput[], expected: CompletionOutput[], model: string, what = ''): Promise<void> {
  let cpu: LLM | null = null;
  try {
    for (const [i, output] of outputs.entries()) {
      const failure = nearTieFailure(output, expected[i], `${what}prompt ${i}`, null);
      if (failure === null) continue;
      const got = output.outputs[0].tokenIds;
      const step = got.findIndex((token, j) => token !== expected[i].tokenIds[j]);
      cpu ??= await LLM.load({ model, backend: 'cpu', showProgress: false, numKvBlocks: 128 });
      const float32: RequestOutput[] = await cpu.generate([[...output.promptTokenIds, ...got.slice(0, step)]], { temperature: 0, maxTokens: 1, ignoreEos: true });
      const picked: number = float32[0].outputs[0].tokenIds[0];
      assert.equal(picked, got[step], `${failure}; and float32 on the CPU picks ${picked} there`);
    }
  } finally {
    await cpu?.close();
  }
}

/** The sampling penalties of the requests compared (SamplingParams' names; absent: none). */
export interface Penalties {
  repetitionPenalty?: number;
  presencePenalty?: number;
  frequencyPenalty?: number;
}

/** Why `output`'s first completion is not `want`'s up to a near-tie (see assertGreedyUpToNearTie), or null. */
function nearTieFailure(output: RequestOutput, want: CompletionOutput, at: string, penalties: Penalties | null): string | null {
  const got = output.outputs[0].tokenIds;
  const step = got.findIndex((token, j) => token !== want.tokenIds[j]);
  if (step === -1) return null;
  const where = `${at}, step ${step}`;
  const { sampled, top } = want.logprobs![step];
  const taken = top.find((candidate) => candidate.tokenId === got[step]);
  if (taken === undefined) return `${where}: ${got[step]} is not among the reference's top ${top.length} (${top.map((c) => c.tokenId).join(', ')})`;
  const rawGap = sampled.logprob - taken.logprob;
  if ((penalties?.repetitionPenalty ?? 1) !== 1) {
    if (Math.abs(rawGap) >= NEAR_TIE) return `${where}: ${got[step]} for the reference's ${sampled.tokenId}: a gap of ${Math.abs(rawGap)} is no near-tie`;
    const history = new Set([...output.promptTokenIds, ...got.slice(0, step)]);
    const touched = [sampled.tokenId, got[step]].filter((token) => history.has(token));
    if (touched.length === 0) return null;
    return `${where}: ${got[step]} for the reference's ${sampled.tokenId}, and the repetition penalty touches ${touched.join(' and ')}: their raw gap is not their penalized one`;
  }
  const penalty = (token: number) => {
    const count = got.slice(0, step).filter((t) => t === token).length;
    return count === 0 ? 0 : (penalties?.presencePenalty ?? 0) + count * (penalties?.frequencyPenalty ?? 0);
  };
  const gap = Math.abs(rawGap - penalty(sampled.tokenId) + penalty(got[step]));
  if (gap < NEAR_TIE) return null;
  const penalizedNote = gap === Math.abs(rawGap) ? '' : ` (penalized; ${Math.abs(rawGap)} raw)`;
  return `${where}: ${got[step]} for the reference's ${sampled.tokenId}: a gap of ${gap}${penalizedNote} is no near-tie`;
}
