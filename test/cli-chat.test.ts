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
  assert.equal(result.stdout, `> ${first}\n> ${second}\n> > ${first}\n> `);
});
