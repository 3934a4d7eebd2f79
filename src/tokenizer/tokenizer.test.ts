import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { KeelError } from '../errors.ts';
import { tempDir } from '../../test/helpers/model-temp-dir.ts';
import {
  TINY_PLAIN_ADDED_TOKEN,
  TINY_SPECIAL_TOKENS,
  tinyByteLevelTokenizerJson,
  tinyMetaspaceTokenizerJson,
  writeTinyTokenizer,
} from '../../test/helpers/model-tiny-tokenizer.ts';
import { openModelFiles } from '../checkpoint/model-files.ts';
import { loadTokenizerIfPresent, Tokenizer } from './tokenizer.ts';

const CONFIG = { bos_token: TINY_SPECIAL_TOKENS.bos, eos_token: TINY_SPECIAL_TOKENS.eos };
const byteLevel = (config: Record<string, unknown> = CONFIG) => new Tokenizer(tinyByteLevelTokenizerJson(), config, null, 'tiny/tokenizer.json');

function rejects(fn: () => unknown, kind: string, ...fragments: string[]): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof KeelError && error.kind === kind, `expected ${kind} KeelError, got ${error}`);
    for (const f of fragments) assert.ok(error.message.includes(f), `"${error.message}" lacks "${f}"`);
    return true;
  });
}

test('byte-level text round-trips, multi-byte characters included, and the post-processor adds BOS', () => {
  const t = byteLevel();
  const text = ' hello 😀€é world!';
  const plain = t.encode(text, { addSpecialTokens: false });
  assert.deepEqual(t.encode(text, { addSpecialTokens: true }), [t.bosTokenId, ...plain]);
  assert.equal(t.decode(plain, { skipSpecialTokens: false }), text);
  assert.deepEqual(plain.map((id) => t.idToToken(id)).slice(0, 4), ['Ġhello', 'Ġ', 'ðŁ', 'ĺĢ'], 'the emoji spans two tokens');
  assert.deepEqual(t.encode('', { addSpecialTokens: false }), []);
  assert.equal(t.decode([], { skipSpecialTokens: true }), '');
});

test('special tokens: ids, isSpecial, and skipSpecialTokens keeps non-special added tokens', () => {
  const t = byteLevel();
  const ids = t.encode(`${TINY_SPECIAL_TOKENS.user}hello${TINY_SPECIAL_TOKENS.eos}${TINY_PLAIN_ADDED_TOKEN}`, { addSpecialTokens: false });
  assert.equal(ids.length, 4);
  assert.equal(ids[2], t.eosTokenId);
  assert.equal(t.vocabSize, 256 + 13 + 4);
  assert.equal(t.bosTokenId, 269);
  assert.equal(t.eosTokenId, 270);
  assert.deepEqual(ids.map((id) => t.isSpecial(id)), [true, false, true, false]);
  assert.equal(t.decode(ids, { skipSpecialTokens: false }), `${TINY_SPECIAL_TOKENS.user}hello${TINY_SPECIAL_TOKENS.eos}${TINY_PLAIN_ADDED_TOKEN}`);
  assert.equal(t.decode(ids, { skipSpecialTokens: true }), `hello${TINY_PLAIN_ADDED_TOKEN}`);
});

test('ids without a token decode to nothing; idToToken names them', () => {
  const t = byteLevel();
  assert.equal(t.decode([t.vocabSize, 0x68, t.vocabSize + 100], { skipSpecialTokens: false }), 'h');
  rejects(() => t.idToToken(t.vocabSize), 'invalid_argument', `${t.vocabSize}`);
});

test('encodings and decodings match transformers 5.17 on the same files', () => {
  // AutoTokenizer.from_pretrained on writeTinyTokenizer's files gave these ids and strings.
  const t = byteLevel();
  assert.deepEqual(t.encode('hello world', { addSpecialTokens: true }), [269, 259, 265]);
  assert.deepEqual(t.encode(' hello 😀€é!', { addSpecialTokens: true }), [269, 260, 32, 266, 267, 268, 172, 195, 169, 33]);
  assert.deepEqual(t.encode('<|user|>hello<|eos|><tool> world', { addSpecialTokens: false }), [271, 259, 270, 272, 265]);
  assert.deepEqual(t.encode('', { addSpecialTokens: true }), [269]);
  const ids = [269, 271, 259, 270, 272, 265];
  assert.equal(t.decode(ids, { skipSpecialTokens: false }), '<|bos|><|user|>hello<|eos|><tool> world');
  assert.equal(t.decode(ids, { skipSpecialTokens: true }), 'hello<tool> world');
});

test("tokenizer.json's post-processor alone decides the added special tokens, as in transformers 5", () => {
  // transformers 5.17 ignores add_bos_token / add_eos_token here, for generic and Llama tokenizer classes alike.
  const plain = byteLevel().encode('hello', { addSpecialTokens: true });
  assert.deepEqual(byteLevel({ ...CONFIG, add_bos_token: false, add_eos_token: true }).encode('hello', { addSpecialTokens: true }), plain);
  const llama = new Tokenizer(
    tinyMetaspaceTokenizerJson(),
    { tokenizer_class: 'LlamaTokenizerFast', add_bos_token: true, bos_token: '<s>', eos_token: { content: '</s>', special: true } },
    null,
    'm',
  );
  assert.deepEqual(llama.encode('', { addSpecialTokens: true }), [], 'no post-processor, no BOS');
  assert.equal(llama.bosTokenId, 1);
  assert.equal(llama.eosTokenId, 2, 'special tokens may be serialized AddedToken objects');
  assert.equal(llama.decode([1, 3, 4], { skipSpecialTokens: false }), '<s> Hello world');
  assert.equal(llama.decode([4], { skipSpecialTokens: true }), 'world');
});

test('load needs tokenizer.json; loadTokenizerIfPresent treats its absence as no tokenizer', (t) => {
  const dir = tempDir(t);
  assert.equal(loadTokenizerIfPresent(openModelFiles(dir)), null);
  rejects(() => Tokenizer.load(dir), 'invalid_model', 'tokenizer.json', dir);
  writeTinyTokenizer(dir);
  const tokenizer = loadTokenizerIfPresent(openModelFiles(dir));
  assert.ok(tokenizer);
  assert.equal(tokenizer.decode(tokenizer.encode('hello world', { addSpecialTokens: true }), { skipSpecialTokens: true }), 'hello world');
  writeFileSync(join(dir, 'tokenizer.json'), '{"model": ');
  rejects(() => Tokenizer.load(dir), 'invalid_model', join(dir, 'tokenizer.json'));
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify({ model: { type: 'Nope' }, decoder: null, post_processor: null, pre_tokenizer: null, normalizer: null, added_tokens: [] }));
  rejects(() => Tokenizer.load(dir), 'invalid_model', 'cannot build the tokenizer');
});

test('applyChatTemplate renders the model template with its special tokens, and says when there is none', (t) => {
  const dir = tempDir(t);
  writeTinyTokenizer(dir, { chat_template: '{{ bos_token }}{% for m in messages %}{{ m.content }}{{ eos_token }}{% endfor %}{% if add_generation_prompt %}>{% endif %}' });
  assert.equal(Tokenizer.load(dir).applyChatTemplate([{ role: 'user', content: 'hi' }], { addGenerationPrompt: true }), '<|bos|>hi<|eos|>>');
  writeTinyTokenizer(dir);
  rejects(() => Tokenizer.load(dir).applyChatTemplate([], { addGenerationPrompt: true }), 'invalid_argument', 'no chat template');
});
