import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { LLM } from '../src/engine/llm.ts';

const BIN = fileURLToPath(new URL('../bin/keel', import.meta.url));
const FLAGS = ['--backend', 'cpu', '--no-progress', '--max-tokens', '8', '--temperature', '0', '--ignore-eos'];

/** What the engine itself answers to a conversation, through the chat template. */
async function expectedReply(messages: { role: 'user' | 'assistant' | 'system'; content: string }[]): Promise<string> {
  const llm = await LLM.load({ backend: 'cpu', showProgress: false, numKvBlocks: 64 });
  try {
    const [out] = await llm.generate([llm.encodeChat(messages)], { maxTokens: 8, temperature: 0, ignoreEos: true });
    return out.outputs[0].text;
  } finally {
    await llm.close();
  }
}

test('keel chat --message answers one message through the chat template', async () => {
  const result = spawnSync(BIN, ['chat', ...FLAGS, '--message', 'hello'], { encoding: 'utf8' });
  assert.equal(result.status, 0, result.stderr);
  assert.equal(result.stdout, `${await expectedReply([{ role: 'user', content: 'hello' }])}\n`);
});

test('keel chat keeps the conversation across turns, /reset forgets it, /exit leaves', async () => {
  const result = spawnSync(BIN, ['chat', ...FLAGS], { encoding: 'utf8', input: 'hello\nand again\n/reset\nhello\n/exit\n' });
  assert.equal(result.status, 0, result.stderr);
  const first = await expectedReply([{ role: 'user', content: 'hello' }]);
  const second = await expectedReply([
    { role: 'user', content: 'hello' },
    { role: 'assistant', content: first },
    { role: 'user', content: 'and again' },
  ]);
  assert.equal(result.stdout, `> ${first}\n> ${second}\n> (conversation reset)\n> ${first}\n> `);
});

test('keel chat answers /help and /system itself: the model sees the system message, never the commands', async () => {
  const result = spawnSync(BIN, ['chat', ...FLAGS], { encoding: 'utf8', input: '/help\n/system be brief\nhello\n/system\n/sytem x\n' });
  assert.equal(result.status, 0, result.stderr);
  const [help, set, reply, removed, unknown] = result.stdout.split('> ').slice(1);
  assert.match(help, /\/reset[^]*\/system TEXT[^]*Ctrl-C/);
  assert.equal(set, '(system message set)\n');
  assert.equal(reply, `${await expectedReply([{ role: 'system', content: 'be brief' }, { role: 'user', content: 'hello' }])}\n`);
  assert.equal(removed, '(system message removed)\n');
  assert.equal(unknown, 'unknown command /sytem (did you mean /system?); /help lists them\n');
});

test('a conversation longer than the context drops its oldest turns with a notice and goes on', async () => {
  // 64 tokens of context: two of these messages and their replies do not fit beside a third.
  const messages = ['hello there this is a fairly long message number one with words', 'and this is message number two, long enough too', 'a third one'];
  const result = spawnSync(BIN, ['chat', ...FLAGS, '--max-model-len', '64'], { encoding: 'utf8', input: `${messages.join('\n')}\n` });
  assert.equal(result.status, 0, result.stderr);
  assert.match(result.stderr, /dropped the \d+ oldest messages? to fit the context of 64 tokens/);
  assert.equal(result.stdout.split('> ').length, 5, 'three replies and the last prompt');
});

test('a message that cannot fit the context is refused and the chat goes on', () => {
  const result = spawnSync(BIN, ['chat', ...FLAGS, '--max-model-len', '64'], { encoding: 'utf8', input: `${'word '.repeat(100)}\nhello\n` });
  assert.equal(result.status, 0, result.stderr);
  assert.match(result.stderr, /do not fit the context of 64 tokens[^]*--max-tokens/);
  assert.match(result.stdout, /^> > .+\n> $/s, 'the next message is answered');
});

test('keel chat --n 2 is refused before the model loads', () => {
  const result = spawnSync(BIN, ['chat', ...FLAGS, '--n', '2', '--model', '/nonexistent'], { encoding: 'utf8' });
  assert.equal(result.status, 1);
  assert.match(result.stderr, /--n must be 1 in keel chat/);
});
