import assert from 'node:assert/strict';
import { test } from 'node:test';
import { forkStream } from '../sampling/rng.ts';
import { TINY_PLAIN_ADDED_TOKEN, TINY_SPECIAL_TOKENS, tinyByteLevelTokenizerJson, tinyMetaspaceTokenizerJson } from '../../test/helpers/model-tiny-tokenizer.ts';
import { IncrementalDetokenizer } from './detokenizer.ts';
import { Tokenizer } from './tokenizer.ts';

const tokenizer = new Tokenizer(tinyByteLevelTokenizerJson(), { bos_token: TINY_SPECIAL_TOKENS.bos, eos_token: TINY_SPECIAL_TOKENS.eos }, null, 'tiny');

function stream(ids: number[], skipSpecialTokens: boolean, prompt: number[] = []): { pieces: string[]; tail: string } {
  const detokenizer = new IncrementalDetokenizer(tokenizer, prompt, { skipSpecialTokens });
  const pieces = ids.map((id) => detokenizer.push(id));
  return { pieces, tail: detokenizer.flush() };
}

test('an emoji split over two byte-level tokens is emitted whole, once both halves arrive', () => {
  const ids = tokenizer.encode('hi 😀!', { addSpecialTokens: false });
  const { pieces, tail } = stream(ids, true);
  const tokens = ids.map((id) => tokenizer.idToToken(id));
  assert.deepEqual(tokens, ['h', 'i', 'Ġ', 'ðŁ', 'ĺĢ', '!']);
  assert.deepEqual(pieces, ['h', 'i', ' ', '', '😀', '!']);
  assert.equal(tail, '');
});

test('flush releases an incomplete character as decode would show it', () => {
  const ids = tokenizer.encode('a€', { addSpecialTokens: false }).slice(0, 2);
  const { pieces, tail } = stream(ids, false);
  assert.deepEqual(pieces, ['a', '']);
  assert.equal(pieces.join('') + tail, tokenizer.decode(ids, { skipSpecialTokens: false }));
  assert.ok(tail.endsWith('\uFFFD'));
});

test('special tokens are dropped or kept by skipSpecialTokens, non-special added tokens always kept', () => {
  const ids = tokenizer.encode(`hello${TINY_SPECIAL_TOKENS.eos}${TINY_PLAIN_ADDED_TOKEN} world`, { addSpecialTokens: true });
  assert.equal(stream(ids, true).pieces.join(''), `hello${TINY_PLAIN_ADDED_TOKEN} world`);
  assert.equal(stream(ids, false).pieces.join(''), `${TINY_SPECIAL_TOKENS.bos}hello${TINY_SPECIAL_TOKENS.eos}${TINY_PLAIN_ADDED_TOKEN} world`);
});

test('prompt context gives the first generated token the leading space a SentencePiece decoder strips at the start', () => {
  const sentencePiece = new Tokenizer(tinyMetaspaceTokenizerJson(), { bos_token: '<s>', eos_token: '</s>' }, null, 'sp');
  const withPrompt = new IncrementalDetokenizer(sentencePiece, [1, 3], { skipSpecialTokens: true });
  assert.deepEqual([withPrompt.push(4), withPrompt.push(5), withPrompt.flush()], [' world', '!', '']);
  const withoutPrompt = new IncrementalDetokenizer(sentencePiece, [], { skipSpecialTokens: true });
  assert.deepEqual([withoutPrompt.push(4), withoutPrompt.push(5)], ['world', '!']);
  assert.equal(sentencePiece.decode([4, 5], { skipSpecialTokens: true }), 'world!');
});

test('random token streams: no broken characters, pieces concatenate to decode(all), and each step decodes a short window', () => {
  const seed = Number(process.env.KEEL_TEST_SEED ?? Math.floor(Math.random() * 2 ** 32));
  console.log(`detokenizer test seed ${seed} (rerun with KEEL_TEST_SEED=${seed})`);
  const rng = forkStream(seed, 0);
  const fragments = ['hello', ' world', ' ', 'é', '€', '😀', '!', 'ab', '\n', TINY_SPECIAL_TOKENS.eos, TINY_SPECIAL_TOKENS.user, TINY_PLAIN_ADDED_TOKEN];
  const longestWindow = { length: 0 };
  const spy = Object.create(tokenizer) as Tokenizer;
  spy.decode = (ids, options) => {
    longestWindow.length = Math.max(longestWindow.length, ids.length);
    return tokenizer.decode(ids, options);
  };
  for (let round = 0; round < 200; round++) {
    const text = Array.from({ length: 1 + Math.floor(rng.nextFloat() * 40) }, () => fragments[Math.floor(rng.nextFloat() * fragments.length)]).join('');
    const ids = tokenizer.encode(text, { addSpecialTokens: false });
    // Raw random ids too: byte tokens in any order make invalid UTF-8 that must still come out as decode shows it.
    if (round % 4 === 0) for (let i = 0; i < 5; i++) ids.push(Math.floor(rng.nextFloat() * tokenizer.vocabSize));
    for (const skipSpecialTokens of [true, false]) {
      const detokenizer = new IncrementalDetokenizer(spy, [], { skipSpecialTokens });
      const pieces = ids.map((id) => detokenizer.push(id));
      const whole = tokenizer.decode(ids, { skipSpecialTokens });
      assert.equal(pieces.join('') + detokenizer.flush(), whole, `text ${JSON.stringify(text)} ids ${ids}`);
      if (round % 4 !== 0) {
        for (const piece of pieces) assert.ok(!piece.includes('\uFFFD'), `broken character in ${JSON.stringify(piece)} of ${JSON.stringify(text)}`);
      }
    }
  }
  assert.ok(longestWindow.length <= 12, `longest decoded window ${longestWindow.length}`);
});
