import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { EngineReplicas } from '../../src/server/engine-host/engine-replicas.ts';
import { startServer } from '../../src/server/server.ts';
import { Tokenizer } from '../../src/tokenizer/tokenizer.ts';
import { TINY_LLAMA_CONFIG, writeTinyCheckpoint } from '../helpers/model-tiny-checkpoint.ts';
import { TEST_BACKEND } from './test-backend.ts';
import { engineStats, metricValue, startTinyServer, type TinyServer } from './tiny-server.ts';

let server: TinyServer;

before(async () => {
  server = await startTinyServer({ server: { apiKey: 'sesame', maxBodyBytes: 4096, maxQueuedSequences: 4, servedModelName: 'tiny' } });
});
after(() => server.close());

const AUTH = { authorization: 'Bearer sesame' };

function post(path: string, body: unknown, headers: Record<string, string> = AUTH): Promise<Response> {
  return fetch(`${server.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
}

interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

/** Asserts an error response in OpenAI's schema and returns its error object. */
async function expectError(response: Response, status: number): Promise<ErrorBody['error']> {
  assert.equal(response.status, status);
  assert.match(response.headers.get('content-type') ?? '', /^application\/json/);
  const body = (await response.json()) as ErrorBody;
  assert.deepEqual(Object.keys(body), ['error']);
  assert.deepEqual(Object.keys(body.error).sort(), ['code', 'message', 'param', 'type']);
  assert.equal(typeof body.error.message, 'string');
  assert.doesNotMatch(body.error.message, /\n\s+at /, 'no stack trace');
  return body.error;
}

test('the API needs the key; the playground, health and metrics do not', async () => {
  const missing = await expectError(await post('/v1/completions', { prompt: 'hello' }, {}), 401);
  assert.equal(missing.code, 'invalid_api_key');
  await expectError(await post('/v1/completions', { prompt: 'hello' }, { authorization: 'Bearer sesame2' }), 401);
  await expectError(await fetch(`${server.url}/v1/models`, { headers: { authorization: 'Basic c2VzYW1l' } }), 401);
  await expectError(await post('/tokenize', { prompt: 'hello' }, {}), 401);
  // The router decodes %-escapes; the key check follows the route it matched, not the raw URL.
  for (const path of ['/v%31/models', '/%761/models', '/v1/model%73']) await expectError(await fetch(`${server.url}${path}`), 401);
  await expectError(await post('/tokeniz%65', { prompt: 'hello' }, {}), 401);
  assert.equal((await fetch(`${server.url}/v1/models`, { headers: AUTH })).status, 200);
  for (const path of ['/', '/playground/app.js', '/playground/style.css', '/health', '/metrics']) {
    assert.equal((await fetch(`${server.url}${path}`)).status, 200, path);
  }
});

test('browser requests from another origin are 403; same-origin ones pass', async () => {
  const host = new URL(server.url).host;
  const evil = await expectError(await post('/v1/completions', { prompt: [1], max_tokens: 1 }, { ...AUTH, origin: 'https://evil.example' }), 403);
  assert.equal(evil.code, 'cross_origin');
  await expectError(await post('/v1/completions', { prompt: [1], max_tokens: 1 }, { ...AUTH, origin: 'null' }), 403);
  assert.equal((await post('/v1/completions', { prompt: [1], max_tokens: 1 }, { ...AUTH, origin: `http://${host}` })).status, 200);
});

test('unknown routes are 404 and known routes with the wrong method 405 with Allow', async () => {
  const notFound = await expectError(await fetch(`${server.url}/v1/embeddings`, { method: 'POST', headers: AUTH }), 404);
  assert.match(notFound.message, /does not support embeddings \(POST \/v1\/embeddings\)/);
  assert.match((await expectError(await fetch(`${server.url}/v1/audio/speech`, { method: 'POST', headers: AUTH }), 404)).message, /does not support audio/);
  assert.match((await expectError(await fetch(`${server.url}/nope`), 404)).message, /^Invalid URL \(GET \/nope\); Keel serves \/v1\/chat\/completions/);
  const wrongMethod = await fetch(`${server.url}/v1/chat/completions`, { headers: AUTH });
  const error = await expectError(wrongMethod, 405);
  assert.equal(error.code, 'method_not_allowed');
  assert.equal(wrongMethod.headers.get('allow'), 'POST');
  assert.equal((await expectError(await fetch(`${server.url}/health`, { method: 'DELETE' }), 405)).code, 'method_not_allowed');
});

test('a body over --max-body-bytes is 413', async () => {
  const error = await expectError(await post('/v1/completions', { prompt: 'x'.repeat(5000) }), 413);
  assert.equal(error.code, 'request_too_large');
});

test('a batch of more sequences than --max-queued-sequences is 413', async () => {
  const tooBig = await expectError(await post('/v1/completions', { prompt: [[1], [2], [3], [4], [5]], max_tokens: 1 }), 413);
  assert.equal(tooBig.code, 'request_too_large');
  assert.equal((await post('/v1/completions', { prompt: [[1], [2], [3], [4]], max_tokens: 1 })).status, 200);
});

test('while the queue is full, new requests are 429 with Retry-After', async () => {
  // One running slot, taken by a long request: the next ones wait in the engine's queue.
  const busy = await startTinyServer({ engine: { maxNumSeqs: 1 }, server: { maxQueuedSequences: 2, logLevel: 'silent' }, model: { max_position_embeddings: 2048 } });
  try {
    const send = (body: unknown) => fetch(`${busy.url}/v1/completions`, { method: 'POST', body: JSON.stringify(body) });
    const long = send({ prompt: [1], max_tokens: 2000, ignore_eos: true });
    await waitFor(async () => (await engineStats(busy.url)).running === 1);
    const queued = [send({ prompt: [2], max_tokens: 1 }), send({ prompt: [3], max_tokens: 1 })];
    await waitFor(async () => (await engineStats(busy.url)).waiting === 2);
    const refused = await send({ prompt: [4], max_tokens: 1 });
    const error = await expectError(refused, 429);
    assert.equal(error.code, 'queue_full');
    assert.equal(refused.headers.get('retry-after'), '1');
    for (const response of await Promise.all([long, ...queued])) assert.equal(response.status, 200);
  } finally {
    await busy.close();
  }
});

async function waitFor(condition: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!(await condition())) {
    assert.ok(Date.now() < deadline, 'timed out');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

test('request ids: a client id is echoed, a missing or unusable one replaced by a fresh one', async () => {
  const echoed = await post('/v1/completions', { prompt: [1, 2], max_tokens: 1 }, { ...AUTH, 'x-request-id': 'client-42' });
  assert.equal(echoed.headers.get('x-request-id'), 'client-42');
  const fresh = await post('/v1/completions', { prompt: [1, 2], max_tokens: 1 }, { ...AUTH, 'x-request-id': 'bad id with spaces' });
  assert.match(fresh.headers.get('x-request-id') ?? '', /^[0-9a-f-]{36}$/);
  const streamed = await post('/v1/completions', { prompt: [1, 2], max_tokens: 1, stream: true }, { ...AUTH, 'x-request-id': 'stream-7' });
  assert.equal(streamed.headers.get('x-request-id'), 'stream-7');
  await streamed.text();
});

test('one JSON log line per request with id, method, path, status, latency and tokens', async () => {
  await post('/v1/completions', { prompt: [1, 2, 3], max_tokens: 2 }, { ...AUTH, 'x-request-id': 'logged-1' });
  await post('/v1/completions', { prompt: 'hi', temperature: 'hot' }, { ...AUTH, 'x-request-id': 'logged-2' });
  await new Promise((resolve) => setTimeout(resolve, 20));
  const [ok] = server.logs.filter((l) => l.request_id === 'logged-1');
  assert.equal(ok.msg, 'request');
  assert.equal(ok.level, 'info');
  assert.equal(ok.method, 'POST');
  assert.equal(ok.path, '/v1/completions');
  assert.equal(ok.status, 200);
  assert.equal(typeof ok.latency_ms, 'number');
  assert.equal(ok.prompt_tokens, 3);
  assert.equal(ok.completion_tokens, 2);
  const [bad] = server.logs.filter((l) => l.request_id === 'logged-2');
  assert.equal(bad.status, 400);
  assert.match(String(bad.error), /temperature/);
});

test('GET /metrics exposes engine state, token counters and latency histograms in Prometheus text', async () => {
  await post('/v1/completions', { prompt: [1, 2, 3], max_tokens: 4, ignore_eos: true });
  const response = await fetch(`${server.url}/metrics`);
  assert.match(response.headers.get('content-type') ?? '', /^text\/plain/);
  const text = await response.text();
  for (const name of [
    'keel_num_requests_running',
    'keel_num_requests_waiting',
    'keel_kv_cache_usage_ratio',
    'keel_kv_cache_free_blocks',
    'keel_kv_cache_cached_blocks',
    'keel_prefix_cache_hit_ratio',
    'keel_num_preemptions_total',
  ]) {
    assert.notEqual(metricValue(text, name), null, name);
  }
  assert.ok((metricValue(text, 'keel_prompt_tokens_total') ?? 0) >= 3);
  assert.ok((metricValue(text, 'keel_generation_tokens_total') ?? 0) >= 4);
  for (const histogram of ['keel_time_to_first_token_seconds', 'keel_time_per_output_token_seconds', 'keel_e2e_request_latency_seconds']) {
    assert.ok((metricValue(text, `${histogram}_count`) ?? 0) >= 1, histogram);
  }
  assert.equal(metricValue(text, 'keel_kv_cache_total_blocks', { model_name: 'tiny' }), 256);
});

test('/tokenize and /detokenize round-trip; /health answers', async () => {
  const tokenized = (await (await post('/tokenize', { prompt: 'hello world' })).json()) as { tokens: number[]; count: number; max_model_len: number };
  assert.equal(tokenized.count, tokenized.tokens.length);
  const tokenizer = Tokenizer.load(server.engine.info.modelPath);
  assert.equal(tokenized.max_model_len, server.engine.info.maxModelLen);
  assert.deepEqual(tokenized.tokens, tokenizer.encode('hello world', { addSpecialTokens: true }));
  const bare = (await (await post('/tokenize', { prompt: 'hello world', add_special_tokens: false })).json()) as { tokens: number[] };
  assert.deepEqual(bare.tokens, tokenized.tokens.slice(1));
  const detokenized = (await (await post('/detokenize', { tokens: bare.tokens })).json()) as { prompt: string };
  assert.equal(detokenized.prompt, 'hello world');
  const chat = (await (await post('/tokenize', { messages: [{ role: 'user', content: 'hi' }] })).json()) as { tokens: number[] };
  const template = tokenizer.applyChatTemplate([{ role: 'user', content: 'hi' }], { addGenerationPrompt: true });
  assert.deepEqual(chat.tokens, tokenizer.encode(template, { addSpecialTokens: false }));
  assert.equal((await expectError(await post('/tokenize', {}), 400)).param, 'prompt');
  assert.equal((await expectError(await post('/detokenize', { tokens: [1, 99999] }), 400)).param, 'tokens[1]');
  assert.deepEqual(await (await fetch(`${server.url}/health`)).json(), { status: 'ok' });
});

test('GET /v1/engine/stats reports the engine in JSON', async () => {
  const stats = (await (await fetch(`${server.url}/v1/engine/stats`, { headers: AUTH })).json()) as Record<string, unknown>;
  assert.equal(stats.model, 'tiny');
  assert.deepEqual(Object.keys(stats.kv_cache as object).sort(), ['block_size', 'cached_blocks', 'free_blocks', 'total_blocks', 'usage', 'used_blocks']);
  for (const key of ['running', 'waiting', 'prefix_cache_hit_rate', 'generation_tokens_per_second', 'preemptions_total']) assert.equal(typeof stats[key], 'number', key);
});

test('a model without a tokenizer serves token-id prompts; text, chat, stop strings and bad words are 400', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'keel-server-no-tokenizer-'));
  // A head dim of 8 (32 / 4 heads): the CUDA backend needs a multiple of 8.
  writeTinyCheckpoint(dir, { ...TINY_LLAMA_CONFIG, hidden_size: 32 });
  const engine = await EngineReplicas.start({ model: dir, backend: TEST_BACKEND, showProgress: false, numKvBlocks: 16 });
  const bare = await startServer({ engine, port: 0, logLevel: 'silent' });
  try {
    const send = (path: string, body: unknown) => fetch(`${bare.url}${path}`, { method: 'POST', body: JSON.stringify(body) });
    const ok = (await (await send('/v1/completions', { prompt: [1, 2, 3], max_tokens: 3, ignore_eos: true })).json()) as { choices: { text: string }[]; usage: { completion_tokens: number } };
    assert.equal(ok.usage.completion_tokens, 3);
    assert.equal(ok.choices[0].text, '');
    assert.equal((await expectError(await send('/v1/completions', { prompt: 'hello' }), 400)).param, 'prompt');
    assert.equal((await expectError(await send('/v1/completions', { prompt: [1], stop: 'x' }), 400)).param, 'stop');
    assert.equal((await expectError(await send('/v1/completions', { prompt: [1], bad_words: ['x'] }), 400)).param, 'bad_words');
    assert.equal((await expectError(await send('/v1/chat/completions', { messages: [{ role: 'user', content: 'hi' }] }), 400)).param, 'messages');
    await expectError(await send('/tokenize', { prompt: 'hello' }), 400);
  } finally {
    await bare.close();
    await engine.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('/v1/completions without max_tokens generates 16 tokens, as OpenAI does, or what room the prompt leaves', async () => {
  const completionTokens = async (prompt: number[]) => {
    const response = await post('/v1/completions', { prompt, ignore_eos: true });
    assert.equal(response.status, 200);
    return ((await response.json()) as { usage: { completion_tokens: number } }).usage.completion_tokens;
  };
  assert.equal(await completionTokens([1, 2, 3]), 16);
  const models = (await (await fetch(`${server.url}/v1/models`, { headers: AUTH })).json()) as { data: { max_model_len: number }[] };
  const maxModelLen = models.data[0].max_model_len;
  assert.equal(await completionTokens(Array.from({ length: maxModelLen - 5 }, (_, i) => 1 + (i % 50))), 5);
});
