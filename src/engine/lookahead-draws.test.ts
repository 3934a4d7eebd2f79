import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DRAFT_HISTORY_COLUMNS } from '../sampling/draw.ts';
import { PenaltyTokens } from '../sampling/penalty-tokens.ts';
import { forkStream } from '../sampling/rng.ts';
import { requestTokenFilters } from '../sampling/request-token-filters.ts';
import { DEFAULT_SAMPLING_PARAMS, type SamplingParams } from '../sampling/sampling-params.ts';
import type { TokenConstraint } from '../structured/token-constraint.ts';
import { LookaheadDraws } from './lookahead-draws.ts';
import { Sequence, UNPROPOSED_DRAFT } from './sequence.ts';

const PENALIZED: SamplingParams = { ...DEFAULT_SAMPLING_PARAMS, temperature: 0, frequencyPenalty: 0.5 };

function lookahead(params: SamplingParams, numDrafts: number, constraint: TokenConstraint | null = null) {
  const seq = new Sequence('r', [4, 5, 6], 2);
  seq.appendDraftTokens(new Array<number>(numDrafts).fill(UNPROPOSED_DRAFT));
  const penaltyTokens = params.frequencyPenalty !== 0 ? new PenaltyTokens([4, 5], false) : null;
  penaltyTokens?.add(6);
  const draws = new LookaheadDraws({ params, tokenFilters: requestTokenFilters(params, 64, null), outputTokenIds: [6], rng: forkStream(1, 0), penaltyTokens, eosTokenIds: [2], constraint, vocabSize: 64 }, seq);
  return { seq, draws };
}

test('a draft draw with a draft history row counts the drafts before it there, not among its penalty tokens', () => {
  const { seq, draws } = lookahead(PENALIZED, 3);
  assert.equal(draws.readsPathOnHost, false, 'penalties read the drafts on the device');
  const onDevice = draws.draw(1, 0, 5);
  assert.deepEqual([onDevice.draftHistoryRow, onDevice.draftHistoryLength], [5, 2], 'drafts 0 and 1 lie in row 5');
  assert.deepEqual([...onDevice.penaltyEntries], [6, 1], 'the output the host knows, without the drafts');
  // The host path: once the drafts are known, the draw lists them itself.
  seq.setDraftToken(0, 9);
  seq.setDraftToken(1, 6);
  const onHost = draws.draw(1, 0);
  assert.deepEqual([onHost.draftHistoryRow, onHost.draftHistoryLength], [-1, 0]);
  assert.deepEqual([...onHost.penaltyEntries], [6, 2, 9, 1]);
  assert.equal(onHost.seed, onDevice.seed, 'the same depth, the same draw otherwise');
  assert.throws(() => lookahead(PENALIZED, 3).draws.draw(1, 0), /a draw follows draft 1, which is not proposed yet/);
});

test('an unpenalized draw names no history row; a grammar or more drafts than a history row holds read the drafts on the host', () => {
  const plain = lookahead({ ...PENALIZED, frequencyPenalty: 0 }, 3).draws.draw(1, 0, 5);
  assert.deepEqual([plain.draftHistoryRow, plain.draftHistoryLength], [-1, 0], 'nothing reads the drafts');
  assert.equal(lookahead(PENALIZED, DRAFT_HISTORY_COLUMNS).draws.readsPathOnHost, false);
  assert.equal(lookahead(PENALIZED, DRAFT_HISTORY_COLUMNS + 1).draws.readsPathOnHost, true);
  const grammar = { numTokens: 0 } as TokenConstraint;
  assert.equal(lookahead({ ...PENALIZED, frequencyPenalty: 0 }, 3, grammar).draws.readsPathOnHost, true);
});
