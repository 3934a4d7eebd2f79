import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { engineStats, startTinyServer, waitForIdleEngine, type TinyServer } from './tiny-server.ts';

// Admission control counts what a request costs the engine, sequences (prompts × n) and prompt
// tokens, not requests: a request larger than a limit on its own is 413, one that does not fit
// beside what already waits is 429, both before any of it reaches the engine.

interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

async function expectError(response: Response, status: number): Promise<ErrorBody['error']> {
  const text = await response.text();
  assert.equal(response.status, status, text.slice(0, 300));
  const body = JSON.parse(text) as ErrorBody;
  assert.deepEqual(Object.keys(body.error).sort(), ['code', 'message', 'param', 'type']);
  return body.error;
}

const send = (url: string, body: unknown, signal?: AbortSignal) => fetch(`${url}/v1/completions`, { method: 'POST', body: JSON.stringify(body), signal });

async function waitFor(condition: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!(await condition())) {
    assert.ok(Date.now() < deadline, 'timed out');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

let server: TinyServer;

before(async () => {
  server = await startTinyServer({ server: { logLevel: 'silent' } });
});
after(() => server.close());

test('one small request asking for 131,072 sequences (1,024 prompts × n 128) is 413 at once, and nothing reaches the engine', { timeout: 30_000 }, async () => {
  const body = { prompt: Array.from({ length: 1024 }, () => [1, 2, 3]), n: 128, max_tokens: 1 };
  assert.ok(JSON.stringify(body).length < 12_000);
  const error = await expectError(await send(server.url, body, AbortSignal.timeout(10_000)), 413);
  assert.equal(error.code, 'request_too_large');
  const stats = await engineStats(server.url);
  assert.equal(stats.running + stats.waiting, 0);
});

test('a request whose prompts × n exceed --max-queued-sequences is 413, though each count alone is allowed', { timeout: 30_000 }, async () => {
  // 16 prompts × n 128 = 2,048 sequences, over the default 1,024.
  const error = await expectError(await send(server.url, { prompt: Array.from({ length: 16 }, () => [1, 2, 3]), n: 128, max_tokens: 1 }, AbortSignal.timeout(10_000)), 413);
  assert.equal(error.code, 'request_too_large');
  assert.match(error.message, /2048 sequences/);
  assert.match(error.message, /--max-queued-sequences 1024/);
});

test('--max-n and --max-prompts-per-request: 413 naming the field', { timeout: 30_000 }, async () => {
  const limited = await startTinyServer({ server: { maxN: 4, maxPromptsPerRequest: 3, logLevel: 'silent' } });
  try {
    const n = await expectError(await send(limited.url, { prompt: [1, 2], n: 5, max_tokens: 1 }), 413);
    assert.equal(n.param, 'n');
    assert.match(n.message, /--max-n 4/);
    const prompts = await expectError(await send(limited.url, { prompt: [[1], [2], [3], [4]], max_tokens: 1 }), 413);
    assert.equal(prompts.param, 'prompt');
    assert.match(prompts.message, /--max-prompts-per-request 3/);
    assert.equal((await send(limited.url, { prompt: [[1], [2], [3]], n: 4, max_tokens: 1 })).status, 200);
  } finally {
    await limited.close();
  }
});

test('while queued sequences (n counted) reach --max-queued-sequences, new requests are 429 with Retry-After', { timeout: 60_000 }, async () => {
  // One running slot, taken by a long request: the next ones wait in the engine's queue.
  const busy = await startTinyServer({ engine: { maxNumSeqs: 1 }, server: { maxQueuedSequences: 4, logLevel: 'silent' }, model: { max_position_embeddings: 2048 } });
  try {
    const long = send(busy.url, { prompt: [1], max_tokens: 1500, ignore_eos: true });
    await waitFor(async () => (await engineStats(busy.url)).running === 1);
    // Three sequences wait: one prompt with n = 3.
    const queued = send(busy.url, { prompt: [2], n: 3, max_tokens: 1 });
    await waitFor(async () => (await engineStats(busy.url)).waiting === 1);
    const refused = await send(busy.url, { prompt: [3], n: 2, max_tokens: 1 });
    const error = await expectError(refused, 429);
    assert.equal(error.code, 'queue_full');
    assert.equal(refused.headers.get('retry-after'), '1');
    assert.match(error.message, /3 sequences/);
    // One more sequence still fits.
    const fits = send(busy.url, { prompt: [4], max_tokens: 1 });
    for (const response of await Promise.all([long, queued, fits])) assert.equal(response.status, 200);
    await waitForIdleEngine(busy.url);
  } finally {
    await busy.close();
  }
});

test('--max-queued-tokens: a prompt over it alone is 413; while queued prompt tokens reach it, new requests are 429', { timeout: 60_000 }, async () => {
  const busy = await startTinyServer({ engine: { maxNumSeqs: 1 }, server: { maxQueuedTokens: 100, logLevel: 'silent' }, model: { max_position_embeddings: 2048 } });
  try {
    const tooLong = await expectError(await send(busy.url, { prompt: Array.from({ length: 101 }, () => 5), max_tokens: 1 }), 413);
    assert.equal(tooLong.param, 'prompt');
    assert.match(tooLong.message, /--max-queued-tokens 100/);
    const long = send(busy.url, { prompt: [1], max_tokens: 1500, ignore_eos: true });
    await waitFor(async () => (await engineStats(busy.url)).running === 1);
    const queued = send(busy.url, { prompt: Array.from({ length: 80 }, () => 6), max_tokens: 1 });
    await waitFor(async () => (await engineStats(busy.url)).waiting === 1);
    const error = await expectError(await send(busy.url, { prompt: Array.from({ length: 30 }, () => 7), max_tokens: 1 }), 429);
    assert.equal(error.code, 'queue_full');
    assert.match(error.message, /80 prompt tokens/);
    for (const response of await Promise.all([long, queued])) assert.equal(response.status, 200);
  } finally {
    await busy.close();
  }
});

test('a prompt over --max-prompt-bytes is 413 before it is tokenized; by default that is 32 bytes per token of the context', { timeout: 30_000 }, async () => {
  // The tiny model's context is 256 tokens: 8,192 bytes.
  const error = await expectError(await send(server.url, { prompt: 'x'.repeat(8193), max_tokens: 1 }), 413);
  assert.equal(error.param, 'prompt');
  assert.match(error.message, /8193 bytes of UTF-8.*--max-prompt-bytes 8192/);
  const batch = await expectError(await send(server.url, { prompt: ['ok', 'é'.repeat(4097)], max_tokens: 1 }), 413);
  assert.equal(batch.param, 'prompt[1]');
  const chat = await fetch(`${server.url}/v1/chat/completions`, { method: 'POST', body: JSON.stringify({ messages: [{ role: 'system', content: 'x'.repeat(5000) }, { role: 'user', content: 'y'.repeat(5000) }] }) });
  assert.equal((await expectError(chat, 413)).param, 'messages');
});
