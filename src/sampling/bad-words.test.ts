import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BadWords } from './bad-words.ts';

test('a one-token sequence is banned at every draw; a longer one only after the rest of it, at the end of the output', () => {
  const words = new BadWords([[7], [1, 2, 3], [4, 5]]);
  assert.equal(words.readsOutput, true);
  assert.deepEqual(words.bannedAfter([]), [7]);
  assert.deepEqual(words.bannedAfter([9, 4]), [7, 5]);
  assert.deepEqual(words.bannedAfter([1, 2]), [7, 3]);
  assert.deepEqual(words.bannedAfter([1, 2, 9]), [7], 'the prefix must end the output');
  assert.deepEqual(words.bannedAfter([2]), [7], 'half a prefix bans nothing');
  assert.equal(new BadWords([[7], [8], [7]]).readsOutput, false);
  assert.deepEqual(new BadWords([[7], [8], [7]]).bannedAfter([1]), [7, 8]);
});

test('each word is tokenized as it begins the text and after a space, each spelling once', () => {
  // A toy tokenizer: a space joins the next character into one token (its code + 1000), a letter alone is its code.
  const encode = (text: string) => [...text.matchAll(/ ?./g)].map(([t]) => (t.length === 2 ? 1000 + t.charCodeAt(1) : t.charCodeAt(0)));
  const words = BadWords.tokenize(['  ab', 'c'], encode);
  assert.deepEqual(words.bannedAfter([]), [99, 1099], '"c" and " c"');
  assert.deepEqual(words.bannedAfter([97]), [99, 1099, 98], '"ab" after its "a"');
  assert.deepEqual(words.bannedAfter([1097]), [99, 1099, 98], '" ab" after its " a"');
});
