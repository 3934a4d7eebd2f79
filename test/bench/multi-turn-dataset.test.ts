import assert from 'node:assert/strict';
import { test } from 'node:test';
import { multiTurnConversations } from '../../src/bench/multi-turn-dataset.ts';

const SEED = Number(process.env.TEST_SEED ?? Date.now() % 100000);
console.log(`multi-turn dataset seed: ${SEED}`);
const SPEC = { numConversations: 7, numTurns: 4, inputLen: { min: 10, max: 30 }, turnLen: { min: 2, max: 6 }, outputLen: { min: 3, max: 9 }, vocabSize: 50, seed: SEED };

test('each turn re-sends its conversation\'s history: the previous prompt, an answer of that turn\'s output length, and new user tokens', () => {
  const conversations = multiTurnConversations(SPEC);
  assert.equal(conversations.length, 7);
  for (const turns of conversations) {
    assert.equal(turns.length, 4);
    const first = turns[0].promptTokenIds.length;
    assert.ok(first >= 10 && first <= 30);
    for (let k = 1; k < turns.length; k++) {
      const previous = turns[k - 1];
      const prompt = turns[k].promptTokenIds;
      assert.deepEqual(prompt.slice(0, previous.promptTokenIds.length), previous.promptTokenIds, 'the history comes first');
      const added = prompt.length - previous.promptTokenIds.length - previous.outputLen;
      assert.ok(added >= 2 && added <= 6, `${added} new user tokens`);
    }
    for (const turn of turns) {
      assert.ok(turn.outputLen >= 3 && turn.outputLen <= 9);
      assert.ok(turn.promptTokenIds.every((id) => Number.isInteger(id) && id >= 0 && id < 50));
    }
  }
  // Conversations do not share a first prompt.
  assert.equal(new Set(conversations.map((turns) => turns[0].promptTokenIds.join(','))).size, 7);
});

test('the same seed gives the same conversations; another seed other ones', () => {
  assert.deepEqual(multiTurnConversations(SPEC), multiTurnConversations(SPEC));
  assert.notDeepEqual(multiTurnConversations({ ...SPEC, seed: SEED + 1 }), multiTurnConversations(SPEC));
});

test('counts that are not positive integers are refused, naming the flag', () => {
  assert.throws(() => multiTurnConversations({ ...SPEC, numTurns: 0 }), /--num-turns must be a positive integer/);
  assert.throws(() => multiTurnConversations({ ...SPEC, numConversations: 1.5 }), /--num-conversations must be a positive integer/);
});
