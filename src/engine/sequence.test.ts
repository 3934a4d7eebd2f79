import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Sequence, UNPROPOSED_DRAFT } from './sequence.ts';

test('tracks prompt and output tokens as tokens are appended', () => {
  const seq = new Sequence('req', [5, 6, 7]);
  assert.equal(seq.numTokens, 3);
  assert.equal(seq.numOutputTokens, 0);
  assert.equal(seq.lastTokenId, 7);
  seq.appendToken(8);
  assert.deepEqual(seq.tokenIds, [5, 6, 7, 8]);
  assert.equal(seq.numPromptTokens, 3);
  assert.equal(seq.numOutputTokens, 1);
  assert.equal(seq.lastTokenId, 8);
  assert.equal(seq.status, 'waiting');
});

test('does not share the caller\'s prompt array', () => {
  const prompt = [1, 2];
  const seq = new Sequence('req', prompt);
  seq.appendToken(3);
  assert.deepEqual(prompt, [1, 2]);
});

test('later sequences are younger and have distinct ids', () => {
  const first = new Sequence('a', [1]);
  const second = new Sequence('b', [1]);
  assert.ok(second.arrivalOrder > first.arrivalOrder);
  assert.notEqual(second.id, first.id);
});

test('a fork copies tokens and progress but not blocks, and diverges independently', () => {
  const parent = new Sequence('req', [1, 2, 3]);
  parent.appendToken(4);
  parent.numComputedTokens = 4;
  parent.numCachedTokens = 2;
  const child = parent.fork();
  assert.equal(child.requestId, 'req');
  assert.ok(child.arrivalOrder > parent.arrivalOrder);
  assert.deepEqual(child.tokenIds, [1, 2, 3, 4]);
  assert.equal(child.numPromptTokens, 3);
  assert.equal(child.numComputedTokens, 4);
  assert.equal(child.numCachedTokens, 2);
  assert.equal(child.numBlocks, 0);
  assert.equal(child.numPreemptions, 0);
  child.appendToken(9);
  parent.appendToken(8);
  assert.deepEqual(child.tokenIds, [1, 2, 3, 4, 9]);
  assert.deepEqual(parent.tokenIds, [1, 2, 3, 4, 8]);
});

test('drafts follow the sampled tokens: counted in numTokens, not in the output, confirmed or dropped', () => {
  const seq = new Sequence('req', [1, 2]);
  seq.appendToken(3);
  seq.appendDraftTokens([4, 5, 6]);
  assert.equal(seq.numTokens, 6);
  assert.equal(seq.numOutputTokens, 1);
  assert.equal(seq.numDraftTokens, 3);
  assert.deepEqual([0, 1, 2].map((i) => seq.draftTokenId(i)), [4, 5, 6]);
  assert.throws(() => seq.appendDraftTokens([7]), /drafts/);
  assert.throws(() => seq.fork(), /drafts/);
  // Verification kept two drafts; the engine then takes them, and the token drawn after them.
  seq.dropDraftTokens(2);
  assert.throws(() => seq.appendToken(9), /not its first draft 4/);
  seq.appendToken(4);
  seq.appendToken(5);
  seq.appendToken(9);
  assert.deepEqual(seq.tokenIds, [1, 2, 3, 4, 5, 9]);
  assert.equal(seq.numDraftTokens, 0);
  assert.equal(seq.numOutputTokens, 4);
});

test('drafts reserved for the draft model are filled in once, and all can be dropped', () => {
  const seq = new Sequence('req', [1, 2]);
  seq.appendDraftTokens([UNPROPOSED_DRAFT, UNPROPOSED_DRAFT]);
  assert.equal(seq.hasPendingToken, false);
  seq.setDraftToken(0, 8);
  assert.throws(() => seq.setDraftToken(0, 9), /already proposed/);
  assert.equal(seq.draftTokenId(0), 8);
  assert.throws(() => seq.draftTokenId(2), RangeError);
  assert.throws(() => seq.dropDraftTokens(3), RangeError);
  seq.dropDraftTokens(0);
  assert.deepEqual(seq.tokenIds, [1, 2]);
});
