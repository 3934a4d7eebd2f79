import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { DEFAULT_MODEL_DIR } from '../src/engine/load-engine.ts';
import { Tokenizer } from '../src/tokenizer/tokenizer.ts';

/** What tools/train/train_default_model.py recorded with the Python `tokenizers` library. */
interface TokenizerOracle {
  cases: { text: string; ids: number[]; decoded: string }[];
  chat: { messages: { role: string; content: string }[]; rendered: string; ids: number[] };
}

const oracle: TokenizerOracle = JSON.parse(readFileSync(join(DEFAULT_MODEL_DIR, 'tokenizer_oracle.json'), 'utf8'));
const tokenizer = Tokenizer.load(DEFAULT_MODEL_DIR);

test('the default model tokenizes every oracle text exactly as the Python tokenizers library', () => {
  assert.ok(oracle.cases.length >= 10);
  for (const { text, ids, decoded } of oracle.cases) {
    assert.deepEqual(tokenizer.encode(text, { addSpecialTokens: false }), ids, JSON.stringify(text));
    assert.equal(tokenizer.decode(ids, { skipSpecialTokens: false }), decoded, JSON.stringify(text));
  }
});

test("the default model's chat template renders as transformers renders it", () => {
  const { messages, rendered, ids } = oracle.chat;
  assert.equal(tokenizer.applyChatTemplate(messages as never, { addGenerationPrompt: true }), rendered);
  assert.deepEqual(tokenizer.encode(rendered, { addSpecialTokens: false }), ids);
});

test('`keel generate --prompt` on the default model prints a continuation of the prompt', () => {
  const bin = fileURLToPath(new URL('../bin/keel', import.meta.url));
  const out = execFileSync(bin, ['generate', '--prompt', 'def fibonacci(n):', '--max-tokens', '24', '--temperature', '0', '--backend', 'cpu'], {
    encoding: 'utf8',
  });
  const expected = JSON.parse(readFileSync(join(DEFAULT_MODEL_DIR, 'oracle.json'), 'utf8'));
  const index = expected.texts.indexOf('def fibonacci(n):');
  // transformers' own greedy continuation of the same prompt, cut to the first 24 tokens.
  const reference = tokenizer.decode(expected.greedy[index].slice(0, 24), { skipSpecialTokens: true });
  assert.equal(out, `def fibonacci(n):${reference}\n`);
});
