import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { CompletionOutput, PositionLogprobs, RequestOutput, TokenLogprob } from '../../src/engine/outputs.ts';
import { assertGreedyUpToNearTie } from './near-tie.ts';

// The rule GPU tests hold greedy runs to against a reference run: equal tokens up to a first
// difference, which must be a near-tie among the reference's candidates there. The candidates are
// those of the H200 run that failed the older rule (runner-up only): keel-tiny with repetition
// penalty 1.2 on '# sum a list\n', at step 9, where three tokens lie within 0.074 nats (float32).

const PROMPT = [7, 2522, 292, 714, 203];
const BEFORE = [330, 381, 437, 67, 609, 12, 69, 30, 1201];
const CANDIDATES: TokenLogprob[] = [
  { tokenId: 2067, token: '', logprob: -1.172 },
  { tokenId: 16, token: '', logprob: -1.204 },
  { tokenId: 13, token: '', logprob: -1.246 },
  { tokenId: 904, token: '', logprob: -2.811 },
  { tokenId: 1201, token: '', logprob: -1.19 },
];

/** The reference: BEFORE, then `chosen` at step 9 among `top`, then one more token. */
function reference(chosen: number, top = CANDIDATES.slice(0, 4)): CompletionOutput {
  const tokenIds = [...BEFORE, chosen, 513];
  const logprobs: PositionLogprobs[] = tokenIds.map((tokenId, j) => (j === BEFORE.length ? { sampled: top.find((c) => c.tokenId === chosen)!, top } : { sampled: { tokenId, token: '', logprob: -0.5 }, top: [{ tokenId, token: '', logprob: -0.5 }] }));
  return { index: 0, text: '', tokenIds, logprobs, finishReason: 'length', stopReason: null };
}

function run(tokenIds: number[]): RequestOutput {
  const completion: CompletionOutput = { index: 0, text: '', tokenIds, logprobs: null, finishReason: 'length', stopReason: null };
  return { requestId: '0', prompt: null, promptTokenIds: PROMPT, promptLogprobs: null, outputs: [completion], finished: true, metrics: {} as RequestOutput['metrics'] };
}

test('a run equal to the reference passes; one that parts at a near-tie passes, whichever of the near-tied candidates it takes', () => {
  assertGreedyUpToNearTie([run([...BEFORE, 2067, 513])], [reference(2067)]);
  assertGreedyUpToNearTie([run([...BEFORE, 16, 7])], [reference(2067)]);
  // The third candidate, 0.074 below the first: bf16 logits put all three within a step or two, and ties go to the lower id.
  assertGreedyUpToNearTie([run([...BEFORE, 13, 7])], [reference(2067)]);
  assertGreedyUpToNearTie([run([...BEFORE, 13, 7])], [reference(2067)], '', { repetitionPenalty: 1.2 });
});

test('a difference that is no near-tie, or a token beyond the reference\'s candidates, fails', () => {
  assert.throws(() => assertGreedyUpToNearTie([run([...BEFORE, 904, 7])], [reference(2067)]), /prompt 0, step 9: 904 for the reference's 2067: a gap of 1\.6\d* is no near-tie/);
  assert.throws(() => assertGreedyUpToNearTie([run([...BEFORE, 5, 7])], [reference(2067)]), /prompt 0, step 9: 5 is not among the reference's top 4/);
  assert.throws(() => assertGreedyUpToNearTie([run([...BEFORE.slice(0, 3), 9])], [reference(2067)]), /prompt 0, step 3: 9 is not among the reference's top 1/);
});

test('with a repetition penalty, a near-tie counts only between tokens it leaves alone (raw logprobs are not the penalized ones)', () => {
  // 1201, already in the output, within 0.02 of 2067 in raw logprobs: its penalized logit is another.
  const top = [CANDIDATES[0], CANDIDATES[4], CANDIDATES[1]];
  assertGreedyUpToNearTie([run([...BEFORE, 1201, 7])], [reference(2067, top)]);
  assert.throws(() => assertGreedyUpToNearTie([run([...BEFORE, 1201, 7])], [reference(2067, top)], '', { repetitionPenalty: 1.2 }), /the repetition penalty touches 1201/);
  assert.throws(() => assertGreedyUpToNearTie([run([...BEFORE, 2067, 7])], [reference(1201, top)], 'rep 1.2: ', { repetitionPenalty: 1.2 }), /rep 1\.2: prompt 0, step 9: 2067 for the reference's 1201, and the repetition penalty touches 1201/);
});

test('with presence and frequency penalties, the gap judged is the penalized one', () => {
  const penalties = { presencePenalty: 0.3, frequencyPenalty: 0.8 };
  // 1201 is once in the output: 1.1 comes off its logit. Raw, 0.018 from 2067; penalized, 1.118.
  const close = [CANDIDATES[0], CANDIDATES[4]];
  assert.throws(() => assertGreedyUpToNearTie([run([...BEFORE, 1201, 7])], [reference(2067, close)], '', penalties), /a gap of 1\.11\d* \(penalized; 0\.01\d* raw\) is no near-tie/);
  // Raw, 1201 leads by 1.072; penalized, it trails 2067 by 0.028: a near-tie either run may take.
  const leading = [CANDIDATES[0], { tokenId: 1201, token: '', logprob: -0.1 }];
  assertGreedyUpToNearTie([run([...BEFORE, 1201, 7])], [reference(2067, leading)], '', penalties);
  assert.throws(() => assertGreedyUpToNearTie([run([...BEFORE, 1201, 7])], [reference(2067, leading)]), /a gap of 1\.07\d* is no near-tie/);
});
