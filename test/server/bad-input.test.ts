import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { after, before, test } from 'node:test';
import { TestRandom, testSeed } from '../helpers/cpu-random.ts';
import { startTinyServer, waitForIdleEngine, type TinyServer } from './tiny-server.ts';

// Abuse: every malformed request gets a 4xx in OpenAI's error schema, none a 5xx, and the server
// keeps serving.

let server: TinyServer;
const MAX_BODY_BYTES = 64 * 1024;

before(async () => {
  server = await startTinyServer({ server: { maxBodyBytes: MAX_BODY_BYTES } });
});
after(() => server.close());

interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
}

/** Sends raw bytes (no client-side JSON encoding), optionally chunked, and reads the answer. */
function send(path: string, body: string | Buffer, options: { chunked?: boolean; contentType?: string | null } = {}): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = {};
    if (options.contentType !== null) headers['content-type'] = options.contentType ?? 'application/json';
    if (!options.chunked) headers['content-length'] = String(Buffer.byteLength(body));
    const req = httpRequest(`${server.url}${path}`, { method: 'POST', headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (options.chunked) {
      const bytes = Buffer.from(body);
      for (let i = 0; i < bytes.length; i += 8192) req.write(bytes.subarray(i, i + 8192));
      req.end();
    } else req.end(body);
  });
}

const sendJson = (path: string, body: unknown) => send(path, JSON.stringify(body));

/** A 4xx whose body is exactly OpenAI's error object; returns it. */
function assertClientError(response: RawResponse, label: string, status?: number): { message: string; param: string | null; code: string | null } {
  assert.ok(response.status >= 400 && response.status < 500, `${label}: expected a 4xx, got ${response.status} ${response.text}`);
  if (status !== undefined) assert.equal(response.status, status, `${label}: ${response.text}`);
  const body = JSON.parse(response.text) as { error: { message: string; type: string; param: string | null; code: string | null } };
  assert.deepEqual(Object.keys(body.error).sort(), ['code', 'message', 'param', 'type'], label);
  assert.equal(typeof body.error.message, 'string', label);
  assert.equal(body.error.type, 'invalid_request_error', label);
  assert.doesNotMatch(body.error.message, /\n\s+at |node_modules|\.ts:\d+/, `${label}: no stack trace or source path`);
  return body.error;
}

const CHAT = { messages: [{ role: 'user', content: 'hello' }], max_tokens: 2 };
const COMPLETION = { prompt: 'hello', max_tokens: 2 };

test('malformed JSON, non-object bodies and empty bodies are 400', async () => {
  for (const body of ['{', '{"messages": [', 'nul', '{"a":1}}', "{'prompt': 'x'}", 'null', '[]', '"text"', '42', 'true', '']) {
    for (const path of ['/v1/chat/completions', '/v1/completions', '/tokenize', '/detokenize']) {
      assertClientError(await send(path, body), `${path} ${JSON.stringify(body)}`, 400);
    }
  }
  // A body is read as JSON whatever its content type, as `curl -d` sends it.
  assert.equal((await send('/v1/completions', JSON.stringify(COMPLETION), { contentType: 'application/x-www-form-urlencoded' })).status, 200);
  assert.equal((await send('/v1/completions', JSON.stringify(COMPLETION), { contentType: null })).status, 200);
});

test('invalid UTF-8 bytes in the body are 400, never replaced silently', async () => {
  const wrap = (bytes: number[]) => Buffer.concat([Buffer.from('{"prompt": "he'), Buffer.from(bytes), Buffer.from('llo", "max_tokens": 2}')]);
  for (const bytes of [[0xff], [0xfe, 0xff], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xe2, 0x82], [0x80]]) {
    const error = assertClientError(await send('/v1/completions', wrap(bytes)), `bytes ${bytes}`, 400);
    assert.match(error.message, /UTF-8/);
  }
});

test('bodies over the limit are 413, declared or chunked', async () => {
  const big = JSON.stringify({ prompt: 'x'.repeat(MAX_BODY_BYTES * 2) });
  assertClientError(await send('/v1/completions', big), 'declared length', 413);
  assertClientError(await send('/v1/completions', big, { chunked: true }), 'chunked', 413);
});

/** Values of the wrong type or out of range for each field; each must be a 400 naming the field. */
const BAD_FIELDS: Record<string, unknown[]> = {
  model: [5, true, {}, []],
  n: ['2', 1.5, 0, -1, 1e9, true],
  temperature: ['hot', -0.5, 1e308, [], true],
  top_p: [0, -1, 1.5, '1'],
  top_k: [-5, 1.5, '3'],
  min_p: [-0.1, 2, 'x'],
  presence_penalty: [-3, 3, '0'],
  frequency_penalty: [-3, 3, {}],
  repetition_penalty: [0, -1, 1000, 'x'],
  seed: [1.5, 2 ** 64, '7', {}],
  stop: [5, [1], [''], '', Array.from({ length: 100 }, (_, i) => `s${i}`), { a: 1 }],
  max_tokens: [-1, 0, 1.5, 1e15, 2 ** 53 + 2, '10', []],
  min_tokens: [-1, 1e9, 'x'],
  stream: ['yes', 1],
  stream_options: ['x', { include_usage: 'yes' }, { unknown: true }],
  ignore_eos: ['true', 1],
  stop_token_ids: [[-1], [1.5], 'x', [[1]]],
  logit_bias: [{ x: 5 }, { '-1': 5 }, { '1.5': 5 }, { '01': 5 }, { '1': 101 }, { '1': -100.5 }, { '1': 'x' }, { '100000': 1 }, 'x', [1]],
  allowed_token_ids: [[], [-1], [1.5], [100_000], 'x'],
  bad_words: ['x', [''], ['  '], [1]],
  user: [5],
  skip_special_tokens: ['no'],
  response_format: [{ type: 'xml' }, { type: 'json_schema', json_schema: {} }, { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'nope' } } }, 'text'],
  structured_outputs: [{}, { regex: '[0-9' }, { choice: [] }, { unknown: 1 }, 'x'],
  guided_json: ['{"type": ', 5, { type: 'nope' }],
  guided_regex: ['', '(a'],
  guided_choice: [[], [''], 'x'],
  guided_grammar: ['root ::= "a" |', 5],
};

const BAD_CHAT_FIELDS: Record<string, unknown[]> = {
  ...BAD_FIELDS,
  max_completion_tokens: [-1, 0, 'x'],
  logprobs: [1, 'true'],
  top_logprobs: [50, -1, 'x'],
  tools: [[{ type: 'function', function: { name: 'f' } }], 'x'],
  tool_choice: ['required', { type: 'function' }],
  modalities: [['audio'], 'text'],
  messages: [[], 'hello', [{}], [{ role: 'tool', content: 'x' }], [{ role: 'robot', content: 'x' }], [{ role: 5, content: 'x' }], [{ role: 'user', content: 5 }], [{ role: 'user' }], [{ role: 'user', content: null }], [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'x' } }] }], [{ role: 'user', content: 'x', extra: 1 }], [null]],
};

const BAD_COMPLETION_FIELDS: Record<string, unknown[]> = {
  ...BAD_FIELDS,
  prompt: [[], [[]], [-1], [1.5], ['a', 1], [[1], 'a'], {}, null, 5, [100_000], [[1], [100_000]]],
  logprobs: [-1, 50, true, 'x'],
  echo: ['yes'],
  suffix: ['tail', 5],
  best_of: [3, 'x'],
};

async function assertEveryFieldRejected(path: string, base: Record<string, unknown>, fields: Record<string, unknown[]>): Promise<void> {
  for (const [field, values] of Object.entries(fields)) {
    for (const value of values) {
      const label = `${path} ${field}=${JSON.stringify(value)?.slice(0, 40)}`;
      const error = assertClientError(await sendJson(path, { ...base, [field]: value }), label);
      if (field !== 'model') assert.ok(error.param?.startsWith(field) || error.param === 'top_logprobs', `${label}: param ${error.param}`);
    }
  }
}

test('every chat field of the wrong type or out of range is a 4xx naming it', async () => {
  await assertEveryFieldRejected('/v1/chat/completions', CHAT, BAD_CHAT_FIELDS);
});

test('every completions field of the wrong type or out of range is a 4xx naming it', async () => {
  await assertEveryFieldRejected('/v1/completions', COMPLETION, BAD_COMPLETION_FIELDS);
  const overflow = assertClientError(await sendJson('/v1/completions', { prompt: 'x'.repeat(400) }), 'long prompt', 400);
  assert.equal(overflow.code, 'context_length_exceeded');
});

test('unknown fields are rejected as OpenAI rejects them; known OpenAI fields Keel ignores are accepted', async () => {
  for (const field of ['foo', 'temprature', 'max_new_tokens', '__proto__', 'constructor']) {
    const body = `{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, ${JSON.stringify(field)}: 1}`;
    const error = assertClientError(await send('/v1/chat/completions', body), field, 400);
    assert.equal(error.param, field);
    assert.match(error.message, /Unrecognized request argument/);
  }
  const lenient = { user: 'u1', response_format: { type: 'text' }, store: false, metadata: { a: 'b' }, service_tier: 'auto', parallel_tool_calls: true, tool_choice: 'none', tools: [], seed: null, stop: null, logprobs: false };
  const response = await sendJson('/v1/chat/completions', { ...CHAT, ...lenient });
  assert.equal(response.status, 200, response.text);
  const completion = await sendJson('/v1/completions', { ...COMPLETION, user: 'u1', best_of: 1, suffix: null, echo: false, stop: [] });
  assert.equal(completion.status, 200, completion.text);
});

/** A random JSON value, biased towards the edges: huge, negative, fractional, empty, nested. */
function randomValue(random: TestRandom, depth = 0): unknown {
  const kind = random.int(0, depth > 1 ? 5 : 7);
  switch (kind) {
    case 0:
      return random.pick([0, -1, 1, 2, 0.5, -0.5, 1e9, -1e9, 1e308, 2 ** 53, 7]);
    case 1:
      return random.pick(['', 'hello', '\u0000', '\ud800', 'é😀', 'x'.repeat(300), '<|eos|>']);
    case 2:
      return random.pick([true, false]);
    case 3:
      return null;
    case 4:
      return random.int(0, 300);
    case 5:
      return random.pick(['system', 'user', 'assistant', 'tool']);
    case 6:
      return Array.from({ length: random.int(0, 3) }, () => randomValue(random, depth + 1));
    default:
      return Object.fromEntries(Array.from({ length: random.int(0, 3) }, () => [random.pick(['role', 'content', 'type', 'text', 'include_usage', 'x']), randomValue(random, depth + 1)]));
  }
}

test('random bodies never cause a 5xx, and every answer is well formed', async () => {
  const random = new TestRandom(testSeed('server fuzz'));
  const fields = [...new Set([...Object.keys(BAD_CHAT_FIELDS), ...Object.keys(BAD_COMPLETION_FIELDS)])];
  for (let i = 0; i < 250; i++) {
    const path = random.pick(['/v1/chat/completions', '/v1/completions', '/tokenize', '/detokenize']);
    const base: Record<string, unknown> = random.pick([{}, CHAT, COMPLETION, { tokens: [1, 2] }]);
    const body: Record<string, unknown> = { ...base };
    for (let k = random.int(1, 4); k > 0; k--) body[random.pick(fields)] = randomValue(random);
    // Keep generation short: the point is the parsing, not the decoding.
    if (typeof body.max_tokens === 'number' && body.max_tokens > 16) body.max_tokens = 16;
    if (body.max_tokens === undefined) body.max_tokens = 4;
    const response = await sendJson(path, body);
    const label = `${path} ${JSON.stringify(body).slice(0, 200)}`;
    if (response.status === 200) {
      if (String(response.headers['content-type']).startsWith('text/event-stream')) assert.match(response.text, /data: \[DONE\]\n\n$|"error"/, label);
      else JSON.parse(response.text);
    } else assertClientError(response, label);
  }
});

test('after all that the server still serves, with every KV block back in the pool', async () => {
  const response = await sendJson('/v1/chat/completions', { ...CHAT, max_tokens: 4, ignore_eos: true });
  assert.equal(response.status, 200, response.text);
  const body = JSON.parse(response.text) as { usage: { completion_tokens: number } };
  assert.equal(body.usage.completion_tokens, 4);
  const idle = await waitForIdleEngine(server.url);
  assert.equal(idle.kv_cache.free_blocks, idle.kv_cache.total_blocks);
});
