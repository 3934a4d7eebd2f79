import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { KeelError } from '../errors.ts';
import { tempDir } from '../../test/helpers/model-temp-dir.ts';
import { openModelFiles } from '../checkpoint/model-files.ts';
import { ChatTemplate, readChatTemplate } from './chat-template.ts';

const TEMPLATE = [
  '{{ bos_token }}',
  '{%- for message in messages %}',
  "{%- if message['role'] not in ['system', 'user', 'assistant'] %}{{ raise_exception('unknown role: ' + message['role']) }}{% endif %}",
  '<|{{ message.role }}|>{{ message.content }}{{ eos_token }}',
  '{%- endfor %}',
  '{%- if add_generation_prompt %}<|assistant|>{% endif %}',
].join('\n');

const SPECIAL = { bos_token: '<s>', eos_token: '</s>' };

function rejects(fn: () => unknown, kind: string, ...fragments: string[]): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof KeelError && error.kind === kind, `expected ${kind} KeelError, got ${error}`);
    for (const f of fragments) assert.ok(error.message.includes(f), `"${error.message}" lacks "${f}"`);
    return true;
  });
}

test('renders messages with bos/eos strings and add_generation_prompt', () => {
  const template = new ChatTemplate(TEMPLATE, 'test');
  const messages = [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: 'hello 😀' },
  ];
  assert.equal(template.render(messages, { addGenerationPrompt: true, specialTokens: SPECIAL }), '<s><|system|>Be brief.</s><|user|>hello 😀</s><|assistant|>');
  assert.equal(template.render(messages, { addGenerationPrompt: false, specialTokens: SPECIAL }), '<s><|system|>Be brief.</s><|user|>hello 😀</s>');
});

test('raise_exception in the template becomes an invalid_argument error carrying its message and no path', () => {
  const template = new ChatTemplate(TEMPLATE, '/srv/models/m/tokenizer_config.json');
  rejects(() => template.render([{ role: 'robot', content: 'x' }], { addGenerationPrompt: true, specialTokens: SPECIAL }), 'invalid_argument', 'unknown role: robot');
  assert.throws(
    () => template.render([{ role: 'robot', content: 'x' }], { addGenerationPrompt: true, specialTokens: SPECIAL }),
    (error: Error) => !error.message.includes('/srv/') && !error.message.includes('tokenizer_config'),
  );
});

test('a template that does not parse is an invalid model naming where it came from', () => {
  rejects(() => new ChatTemplate('{% for %}', 'model/chat_template.jinja'), 'invalid_model', 'model/chat_template.jinja');
});

test('chat_template.jinja wins over tokenizer_config.json; named template lists use "default"', (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, 'tokenizer.json'), '{}');
  const template = (config: Record<string, unknown>) => {
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(config));
    return readChatTemplate(openModelFiles(dir).tokenizer()!);
  };
  const render = (t: ChatTemplate | null) => t?.render([{ role: 'user', content: 'a' }], { addGenerationPrompt: false, specialTokens: {} });
  assert.equal(template({}), null);
  assert.equal(render(template({ chat_template: 'plain' })), 'plain');
  const named = { chat_template: [{ name: 'tool_use', template: 'tools' }, { name: 'default', template: 'default {{ messages | length }}' }] };
  assert.equal(render(template(named)), 'default 1');
  rejects(() => template({ chat_template: [{ name: 'tool_use', template: 'tools' }] }), 'invalid_model', 'tool_use', '"default"');
  rejects(() => template({ chat_template: 42 }), 'invalid_model', 'chat_template');
  writeFileSync(join(dir, 'chat_template.jinja'), 'from the jinja file');
  assert.equal(render(template(named)), 'from the jinja file');
});
