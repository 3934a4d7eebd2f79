import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SpeculationTally } from './speculation-tally.ts';

test('acceptance rate, mean accepted length and per-position acceptance of a constructed case', () => {
  const tally = new SpeculationTally();
  assert.deepEqual(tally.summary(), {
    numSteps: 0,
    numDraftTokens: 0,
    numAcceptedTokens: 0,
    acceptanceRate: null,
    meanAcceptedLength: null,
    draftTokensByPosition: [],
    acceptedTokensByPosition: [],
    acceptanceRateByPosition: [],
  });
  tally.record(4, 2); // drafts 0 and 1 accepted, 2 rejected (3 never judged)
  tally.record(4, 4); // all accepted
  tally.record(2, 0); // the first rejected
  assert.deepEqual(tally.summary(), {
    numSteps: 3,
    numDraftTokens: 10,
    numAcceptedTokens: 6,
    acceptanceRate: 0.6,
    // Each verification gives its accepted drafts and one token more: (3 + 5 + 1) / 3.
    meanAcceptedLength: 3,
    draftTokensByPosition: [3, 3, 2, 2],
    acceptedTokensByPosition: [2, 2, 1, 1],
    acceptanceRateByPosition: [2 / 3, 2 / 3, 0.5, 0.5],
  });
  assert.throws(() => tally.record(2, 3), RangeError);
});
