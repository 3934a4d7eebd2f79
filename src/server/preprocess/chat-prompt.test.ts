import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { DEFAULT_MODEL_DIR } from '../../engine/load-engine.ts';
import { KeelError } from '../../errors.ts';
import type { ChatMessage } from '../../tokenizer/tokenizer.ts';
import { TINY_SPECIAL_TOKENS, tinyMetaspaceTokenizerJson, writeTinyTokenizer } from '../../../test/helpers/model-tiny-tokenizer.ts';
import { ChatPromptEncoder } from './chat-prompt.ts';

const dirs: string[] = [];
after(() => dirs.forEach((dir) => rmSync(dir, { recursive: true, force: true })));

function tokenizerDir(write: (dir: string) => void): string {
  const dir = mkdtempSync(join(tmpdir(), 'keel-chat-prompt-'));
  dirs.push(dir);
  write(dir);
  return dir;
}

const TEMPLATE = "{% for m in messages %}{{ '<|user|>' if m.role == 'user' else '' }}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}";
const byteLevel = tokenizerDir((dir) => writeTinyTokenizer(dir, { chat_template: TEMPLATE }));
// SentencePiece-style: the prefix space goes to the first section only, which a tokenizer that split the text differently would get wrong.
const metaspace = tokenizerDir((dir) => {
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tinyMetaspaceTokenizerJson()));
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ bos_token: '<s>', eos_token: '</s>', chat_template: "{{ bos_token }}{% for m in messages %} {{ m.content }}</s>{% endfor %}" }));
});

const CONVERSATIONS: ChatMessage[][] = [
  [{ role: 'user', content: 'hello world' }],
  [
    { role: 'system', content: 'Hello world!' },
    { role: 'user', content: ' Hello  world ' },
    { role: 'assistant', content: 'world!' },
  ],
  [{ role: 'user', content: 'é😀 €' }],
];

test('without special-token strings in the messages, the ids are the model tokenizer\'s own', () => {
  for (const dir of [byteLevel, metaspace, DEFAULT_MODEL_DIR]) {
    const guarded = ChatPromptEncoder.load(dir, false);
    const allowing = ChatPromptEncoder.load(dir, true);
    for (const messages of CONVERSATIONS) {
      const plain = allowing.plain.encode(allowing.plain.applyChatTemplate(messages, { addGenerationPrompt: true }), { addSpecialTokens: false });
      assert.deepEqual(guarded.encode(messages), plain, `${dir}: ${JSON.stringify(messages)}`);
      assert.deepEqual(allowing.encode(messages), plain);
    }
  }
});

test('a special-token string in a message is read as its text; the template\'s own stay control tokens', () => {
  for (const [dir, special] of [
    [byteLevel, TINY_SPECIAL_TOKENS.eos],
    [DEFAULT_MODEL_DIR, '<|endoftext|>'],
  ] as const) {
    const guarded = ChatPromptEncoder.load(dir, false);
    const tokenizer = guarded.plain;
    const specialId = tokenizer.encode(special, { addSpecialTokens: false });
    assert.equal(specialId.length, 1);
    const messages = [{ role: 'user', content: `stop ${special} here${special}` }];
    const ids = guarded.encode(messages);
    assert.ok(!ids.includes(specialId[0]), `${dir}: the message's ${special} is not token ${specialId[0]}`);
    // The text the ids spell is the template's text, message included.
    assert.equal(tokenizer.decode(ids, { skipSpecialTokens: false }), tokenizer.applyChatTemplate(messages, { addGenerationPrompt: true }));
    assert.ok(ChatPromptEncoder.load(dir, true).encode(messages).includes(specialId[0]), 'allowed, it is the control token');
  }
  // The byte-level template opens each user turn with its <|user|> control token.
  const userId = ChatPromptEncoder.load(byteLevel, false).plain.encode(TINY_SPECIAL_TOKENS.user, { addSpecialTokens: false })[0];
  assert.ok(ChatPromptEncoder.load(byteLevel, false).encode([{ role: 'user', content: 'hi' }]).includes(userId));
});

test('messages holding the marks Keel reserves are refused', () => {
  const guarded = ChatPromptEncoder.load(byteLevel, false);
  for (const mark of ['\uFDD0', '\uFDD1']) {
    assert.throws(() => guarded.encode([{ role: 'user', content: `a${mark}1${mark}` }]), (error: unknown) => error instanceof KeelError && /messages\[0\]/.test(error.message));
  }
});

test('a turn that continues a stored one starts with its prompt ids and the output ids as the model spelled them', () => {
  const encoder = ChatPromptEncoder.load(DEFAULT_MODEL_DIR, false);
  const first: ChatMessage[] = [{ role: 'user', content: 'def add(a, b):' }];
  const promptText = encoder.render(first);
  const promptIds = encoder.tokenize(promptText);
  const reply = '    return a + b\n';
  // A model may generate text in other tokens than tokenizing it gives: one token per character here.
  const spelled = (text: string) => [...text].flatMap((c) => encoder.plain.encode(c, { addSpecialTokens: false }));
  const outputIds = spelled(reply);
  assert.notDeepEqual(outputIds, encoder.plain.encode(reply, { addSpecialTokens: false }));
  const previous = { promptText, promptIds, outputIds };
  const decoded = (ids: number[]) => encoder.plain.decode(ids, { skipSpecialTokens: false });

  const follow = encoder.render([...first, { role: 'assistant', content: reply }, { role: 'user', content: 'and in C?' }]);
  const ids = encoder.tokenizeContinuing(follow, previous);
  assert.deepEqual(ids.slice(0, promptIds.length + outputIds.length), [...promptIds, ...outputIds]);
  assert.equal(decoded(ids), decoded(encoder.tokenize(follow)), 'the same text');

  // A reply the conversation holds otherwise (trimmed here) is carried as far as its text matches.
  const trimmed = encoder.render([...first, { role: 'assistant', content: reply.trimEnd() }, { role: 'user', content: 'and in C?' }]);
  const trimmedIds = encoder.tokenizeContinuing(trimmed, previous);
  const carried = spelled(reply.trimEnd()).length;
  assert.deepEqual(trimmedIds.slice(0, promptIds.length + carried), [...promptIds, ...outputIds.slice(0, carried)]);
  assert.equal(decoded(trimmedIds), decoded(encoder.tokenize(trimmed)));

  // A prompt that does not start with the previous one's text (instructions put first) is tokenized afresh.
  const instructed = encoder.render([{ role: 'system', content: 'Write Python.' }, ...first, { role: 'assistant', content: reply }]);
  assert.deepEqual(encoder.tokenizeContinuing(instructed, previous), encoder.tokenize(instructed));
});
