import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { TINY_SPECIAL_TOKENS, tinyByteLevelTokenizerJson, writeTinyTokenizer } from '../helpers/model-tiny-tokenizer.ts';
import { spawnServe } from './keel-serve-process.ts';
import { writeDummyConfig } from './tiny-chat-model.ts';
import { startTinyServer, type TinyServer } from './tiny-server.ts';

// What the server makes of the text it is sent: lone surrogates are refused rather than replaced,
// special-token strings typed in chat messages stay text, and unknown keys are refused wherever
// they are nested.

let server: TinyServer;

before(async () => {
  server = await startTinyServer({ server: { logLevel: 'silent' } });
});
after(() => server.close());

/** Posts a JSON text as it is (JSON.stringify would escape a lone surrogate the same way, but this is explicit). */
async function postRaw(url: string, path: string, json: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(`${url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: json });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

const errorOf = (body: Record<string, unknown>) => body.error as { message: string; param: string | null; code: string | null };

test('a lone surrogate anywhere in the text is a 400 naming the field, never silently replaced', { timeout: 20_000 }, async () => {
  const cases: [string, string, string][] = [
    ['/v1/completions', '{"prompt": "a\\ud800b", "max_tokens": 1}', 'prompt'],
    ['/v1/completions', '{"prompt": ["ok", "x\\udfff"], "max_tokens": 1}', 'prompt[1]'],
    ['/v1/completions', '{"prompt": "ok", "stop": ["\\ud83d"], "max_tokens": 1}', 'stop[0]'],
    ['/v1/chat/completions', '{"messages": [{"role": "user", "content": "hi \\udc00"}], "max_tokens": 1}', 'messages[0].content'],
    ['/v1/chat/completions', '{"messages": [{"role": "user", "content": [{"type": "text", "text": "\\ud800"}]}], "max_tokens": 1}', 'messages[0].content[0].text'],
    ['/tokenize', '{"prompt": "\\ud800"}', 'prompt'],
  ];
  for (const [path, json, param] of cases) {
    const { status, body } = await postRaw(server.url, path, json);
    assert.equal(status, 400, `${path} ${json}`);
    assert.equal(errorOf(body).param, param, json);
    assert.match(errorOf(body).message, /surrogate/);
  }
  // A surrogate pair is a character like any other.
  assert.equal((await postRaw(server.url, '/v1/completions', '{"prompt": "\\ud83d\\ude00", "max_tokens": 1}')).status, 200);
});

const eosId = (tinyByteLevelTokenizerJson().added_tokens as { id: number; content: string }[]).find((t) => t.content === TINY_SPECIAL_TOKENS.eos)?.id;

async function chatTokens(url: string, content: string): Promise<number[]> {
  const { status, body } = await postRaw(url, '/tokenize', JSON.stringify({ messages: [{ role: 'user', content }] }));
  assert.equal(status, 200);
  return body.tokens as number[];
}

test('a special-token string typed in a chat message is text, not a control token', { timeout: 20_000 }, async () => {
  const tokens = await chatTokens(server.url, `stop here ${TINY_SPECIAL_TOKENS.eos} and go on`);
  assert.ok(!tokens.includes(eosId as number), `the message's ${TINY_SPECIAL_TOKENS.eos} became token ${eosId}`);
  // The template's own special tokens (its <|user|>) are still control tokens.
  const plain = await chatTokens(server.url, 'hello');
  const userId = (tinyByteLevelTokenizerJson().added_tokens as { id: number; content: string }[]).find((t) => t.content === TINY_SPECIAL_TOKENS.user)?.id;
  assert.ok(plain.includes(userId as number));
  // A completions prompt is the model's raw input: there a special-token string is the token.
  const raw = await postRaw(server.url, '/tokenize', JSON.stringify({ prompt: `a${TINY_SPECIAL_TOKENS.eos}` }));
  assert.ok((raw.body.tokens as number[]).includes(eosId as number));
});

test('--allow-special-tokens lets chat messages carry control tokens', { timeout: 20_000 }, async () => {
  const allowing = await startTinyServer({ server: { allowSpecialTokens: true, logLevel: 'silent' } });
  try {
    assert.ok((await chatTokens(allowing.url, `stop here ${TINY_SPECIAL_TOKENS.eos}`)).includes(eosId as number));
  } finally {
    await allowing.close();
  }
});

test('unknown keys inside response_format are refused', { timeout: 20_000 }, async () => {
  const { status, body } = await postRaw(server.url, '/v1/chat/completions', JSON.stringify({ messages: [{ role: 'user', content: 'hi' }], max_tokens: 1, response_format: { type: 'text', strict: true } }));
  assert.equal(status, 400);
  assert.equal(errorOf(body).param, 'response_format.strict');
  assert.equal((await postRaw(server.url, '/v1/chat/completions', JSON.stringify({ messages: [{ role: 'user', content: 'hi' }], max_tokens: 1, response_format: { type: 'text' } }))).status, 200);
});

test('a batch of many prompts prints no MaxListenersExceededWarning', { timeout: 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'keel-serve-batch-'));
  writeDummyConfig(dir, { vocab_size: 288, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1 });
  writeTinyTokenizer(dir);
  const child = await spawnServe(dir, ['--load-format', 'dummy', '--num-kv-blocks', '256']);
  try {
    const response = await fetch(`${child.url}/v1/completions`, { method: 'POST', body: JSON.stringify({ prompt: Array.from({ length: 24 }, (_, i) => [i + 1]), max_tokens: 2 }) });
    assert.equal(response.status, 200);
    await response.text();
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.doesNotMatch(child.stderr(), /MaxListenersExceededWarning/);
  } finally {
    child.child.kill('SIGKILL');
    await child.exited;
    rmSync(dir, { recursive: true, force: true });
  }
});
