import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import OpenAI from 'openai';
import type { ChatCompletionChunk, ChatCompletionCreateParamsNonStreaming, ChatCompletionCreateParamsStreaming } from 'openai/resources/chat/completions';
import type { CompletionCreateParamsNonStreaming } from 'openai/resources/completions';
import type { ResponseStreamEvent } from 'openai/resources/responses/responses';
import { engineStats, metricValue, startTinyServer, waitForIdleEngine, type TinyServer } from './tiny-server.ts';

// The official SDK, unchanged, against a Keel server over the embedded default model. vLLM's extensions
// (ignore_eos...) pass through the SDK as extra body fields.

let server: TinyServer;
let client: OpenAI;
const MODEL = 'tiny';

before(async () => {
  server = await startTinyServer({ server: { servedModelName: MODEL }, defaultModel: true });
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'not-checked', maxRetries: 0 });
});
after(() => server.close());

const chatParams = (extra: Record<string, unknown> = {}) =>
  ({ model: MODEL, messages: [{ role: 'user', content: 'hello world' }], max_tokens: 12, ignore_eos: true, ...extra }) as ChatCompletionCreateParamsNonStreaming;

const completionParams = (extra: Record<string, unknown> = {}) =>
  ({ model: MODEL, prompt: 'hello', max_tokens: 12, ignore_eos: true, ...extra }) as CompletionCreateParamsNonStreaming;

async function collectChat(params: ChatCompletionCreateParamsStreaming): Promise<ChatCompletionChunk[]> {
  const chunks: ChatCompletionChunk[] = [];
  for await (const chunk of await client.chat.completions.create(params)) chunks.push(chunk);
  return chunks;
}

test('models.list names the served model', async () => {
  const models = await client.models.list();
  assert.deepEqual(
    models.data.map((m) => m.id),
    [MODEL],
  );
  assert.equal((await client.models.retrieve(MODEL)).id, MODEL);
});

test('chat completion: one choice with the assistant message, finish reason and usage', async () => {
  const completion = await client.chat.completions.create(chatParams({ seed: 7 }));
  assert.equal(completion.object, 'chat.completion');
  assert.match(completion.id, /^chatcmpl-/);
  assert.equal(completion.model, MODEL);
  assert.equal(completion.choices.length, 1);
  const [choice] = completion.choices;
  assert.equal(choice.index, 0);
  assert.equal(choice.message.role, 'assistant');
  assert.equal(typeof choice.message.content, 'string');
  assert.equal(choice.finish_reason, 'length');
  const prompt = (await (await fetch(`${server.url}/tokenize`, { method: 'POST', body: JSON.stringify({ messages: [{ role: 'user', content: 'hello world' }] }) })).json()) as { count: number };
  assert.deepEqual(completion.usage, { prompt_tokens: prompt.count, completion_tokens: 12, total_tokens: prompt.count + 12 });
});

test('streamed chat: role first, the same text as unstreamed with the same seed, usage last with include_usage', async () => {
  const whole = await client.chat.completions.create(chatParams({ seed: 11, temperature: 1 }));
  const chunks = await collectChat({ ...chatParams({ seed: 11, temperature: 1 }), stream: true, stream_options: { include_usage: true } } as ChatCompletionCreateParamsStreaming);
  assert.equal(chunks[0].choices[0].delta.role, 'assistant');
  assert.ok(chunks.every((c) => c.object === 'chat.completion.chunk' && c.id === chunks[0].id));
  const text = chunks.flatMap((c) => c.choices.map((choice) => choice.delta.content ?? '')).join('');
  assert.equal(text, whole.choices[0].message.content);
  const finishes = chunks.flatMap((c) => c.choices.filter((choice) => choice.finish_reason !== null));
  assert.deepEqual(
    finishes.map((c) => c.finish_reason),
    ['length'],
  );
  const last = chunks[chunks.length - 1];
  assert.deepEqual(last.choices, []);
  assert.deepEqual(last.usage, whole.usage);
  assert.ok(chunks.slice(0, -1).every((c) => c.usage === null));
});

test('streamed chat without include_usage sends no usage', async () => {
  const chunks = await collectChat({ ...chatParams(), stream: true } as ChatCompletionCreateParamsStreaming);
  assert.ok(chunks.length > 1);
  assert.ok(chunks.every((c) => !('usage' in c)));
});

test('the same seed gives the same text at temperature 1; completions of n=2 are numbered 0 and 1', async () => {
  const first = await client.completions.create(completionParams({ seed: 1234, temperature: 1, max_tokens: 16 }));
  const second = await client.completions.create(completionParams({ seed: 1234, temperature: 1, max_tokens: 16 }));
  assert.equal(second.choices[0].text, first.choices[0].text);

  const pair = await client.chat.completions.create(chatParams({ n: 2, seed: 5, temperature: 1 }));
  assert.deepEqual(
    pair.choices.map((c) => c.index),
    [0, 1],
  );
  assert.equal(pair.usage?.completion_tokens, 24);
  const pairAgain = await client.chat.completions.create(chatParams({ n: 2, seed: 5, temperature: 1 }));
  assert.deepEqual(
    pairAgain.choices.map((c) => c.message.content),
    pair.choices.map((c) => c.message.content),
  );
});

test('stop: the text ends before the stop string, with finish_reason stop', async () => {
  const params = completionParams({ seed: 3, temperature: 0, max_tokens: 32 });
  const free = (await client.completions.create(params)).choices[0].text;
  const at = [...free].findIndex((ch, i) => i > 0 && /[!-~]/.test(ch));
  assert.ok(at > 0, `no ASCII character to stop at in ${JSON.stringify(free)}`);
  const stop = [...free][at];
  const stopped = await client.completions.create({ ...params, stop: [stop, 'never-generated'] });
  assert.equal(stopped.choices[0].text, free.slice(0, free.indexOf(stop)));
  assert.equal(stopped.choices[0].finish_reason, 'stop');

  const streamed = await client.completions.create({ ...params, stop, stream: true });
  let text = '';
  for await (const chunk of streamed) text += chunk.choices.map((c) => c.text).join('');
  assert.equal(text, stopped.choices[0].text);
});

test('chat logprobs: one entry per token with its top alternatives', async () => {
  const completion = await client.chat.completions.create(chatParams({ logprobs: true, top_logprobs: 3, max_tokens: 6 }));
  const content = completion.choices[0].logprobs?.content ?? [];
  assert.equal(content.length, 6);
  for (const entry of content) {
    assert.ok(entry.logprob <= 0);
    assert.deepEqual(entry.bytes, [...Buffer.from(entry.token, 'utf8')]);
    assert.equal(entry.top_logprobs.length, 3);
    const tops = entry.top_logprobs.map((t) => t.logprob);
    assert.deepEqual(tops, [...tops].sort((a, b) => b - a));
  }
});

test('completion logprobs: tokens, token_logprobs, top_logprobs and text_offset line up', async () => {
  const completion = await client.completions.create(completionParams({ logprobs: 2, max_tokens: 8, temperature: 0 }));
  const logprobs = completion.choices[0].logprobs;
  assert.ok(logprobs);
  assert.equal(logprobs.tokens?.length, 8);
  assert.equal(logprobs.token_logprobs?.length, 8);
  assert.equal(logprobs.top_logprobs?.length, 8);
  let offset = 0;
  logprobs.tokens?.forEach((token, i) => {
    assert.equal(logprobs.text_offset?.[i], offset);
    offset += token.length;
    const top = logprobs.top_logprobs?.[i] ?? {};
    assert.equal(top[token], logprobs.token_logprobs?.[i]);
    // Greedy: the sampled token is the most likely one.
    assert.equal(Math.max(...Object.values(top)), logprobs.token_logprobs?.[i]);
  });
});

test('token-id prompts: one list, or a batch of lists numbered in order', async () => {
  const single = await client.completions.create(completionParams({ prompt: [1, 2, 3], max_tokens: 4 }));
  assert.equal(single.choices.length, 1);
  assert.equal(single.usage?.prompt_tokens, 3);

  const batch = await client.completions.create(completionParams({ prompt: [[1, 2], [3, 4, 5]], max_tokens: 4, n: 2 }));
  assert.deepEqual(
    batch.choices.map((c) => c.index),
    [0, 1, 2, 3],
  );
  assert.deepEqual(batch.usage, { prompt_tokens: 5, completion_tokens: 16, total_tokens: 21 });

  const texts = await client.completions.create(completionParams({ prompt: ['hello', 'hello world'], max_tokens: 4, echo: true }));
  assert.ok(texts.choices[0].text.startsWith('hello'));
  assert.ok(texts.choices[1].text.startsWith('hello world'));
});

test('streamed completions of a batch carry every choice index and end with usage', async () => {
  const stream = await client.completions.create({ ...completionParams({ prompt: [[1, 2], [3]], max_tokens: 5 }), stream: true, stream_options: { include_usage: true } });
  const finished = new Set<number>();
  let usage = null;
  for await (const chunk of stream) {
    for (const choice of chunk.choices) if (choice.finish_reason) finished.add(choice.index);
    if (chunk.usage) usage = chunk.usage;
  }
  assert.deepEqual([...finished].sort(), [0, 1]);
  assert.deepEqual(usage, { prompt_tokens: 3, completion_tokens: 10, total_tokens: 13 });
});

test('aborting a stream mid-way aborts the request and returns its KV blocks to the pool', async () => {
  const metricsBefore = await (await fetch(`${server.url}/metrics`)).text();
  const abortedBefore = metricValue(metricsBefore, 'keel_request_success_total', { finished_reason: 'abort' }) ?? 0;
  const controller = new AbortController();
  const stream = await client.chat.completions.create({ ...chatParams({ max_tokens: 1000 }), stream: true } as ChatCompletionCreateParamsStreaming, { signal: controller.signal });
  let chunks = 0;
  // The SDK ends the iteration quietly once its signal is aborted.
  for await (const _ of stream) {
    if (++chunks === 3) {
      const busy = await engineStats(server.url);
      assert.ok(busy.kv_cache.free_blocks < busy.kv_cache.total_blocks, 'the request holds KV blocks while it streams');
      controller.abort();
    }
  }
  assert.ok(chunks < 1000);
  const idle = await waitForIdleEngine(server.url);
  assert.equal(idle.kv_cache.free_blocks, idle.kv_cache.total_blocks);
  const metricsAfter = await (await fetch(`${server.url}/metrics`)).text();
  assert.equal(metricValue(metricsAfter, 'keel_request_success_total', { finished_reason: 'abort' }), abortedBefore + 1);
});

/** Token ids of `text` and each one's text, from the server's own tokenizer. */
async function tokensOf(text: string): Promise<{ id: number; text: string }[]> {
  const post = async (path: string, body: unknown) => (await fetch(`${server.url}${path}`, { method: 'POST', body: JSON.stringify(body) })).json();
  const { tokens } = (await post('/tokenize', { prompt: text, add_special_tokens: false })) as { tokens: number[] };
  return Promise.all(tokens.map(async (id) => ({ id, text: ((await post('/detokenize', { tokens: [id] })) as { prompt: string }).prompt })));
}

test('logit_bias forces or bans a token, alone and within allowed_token_ids, on both endpoints; the logprobs stay raw', async () => {
  const [a, b] = await tokensOf(' hello world');
  assert.notEqual(a.text, b.text);
  const forced = await client.chat.completions.create(chatParams({ logit_bias: { [b.id]: 100 }, logprobs: true, temperature: 1, seed: 3 }));
  const content = forced.choices[0].logprobs?.content ?? [];
  assert.deepEqual(content.map((t) => t.token), new Array<string>(12).fill(b.text), 'every token is the forced one');
  // Raw: the forced token's logprob under the unbiased model, far from log(1) = 0.
  assert.ok(content.every((t) => t.logprob < -0.5), `raw logprobs: ${content.map((t) => t.logprob)}`);
  for (const [bias, expected] of [[100, a.text], [-100, b.text]] as const) {
    const completion = await client.completions.create(completionParams({ logit_bias: { [a.id]: bias }, allowed_token_ids: [a.id, b.id], logprobs: 0, temperature: 1, seed: 5 }));
    assert.deepEqual(completion.choices[0].logprobs?.tokens, new Array<string>(12).fill(expected), `a biased by ${bias} among the allowed a and b`);
  }
});

test('bad_words keeps a word the greedy completion spells out of it', async () => {
  const plain = await client.completions.create(completionParams({ prompt: 'def fibonacci(n):', temperature: 0, max_tokens: 24 }));
  const word = plain.choices[0].text.match(/[A-Za-z_]{3,}/)?.[0];
  assert.ok(word, `a word in ${JSON.stringify(plain.choices[0].text)}`);
  const banned = await client.completions.create(completionParams({ prompt: 'def fibonacci(n):', temperature: 0, max_tokens: 24, bad_words: [word] }));
  assert.notEqual(banned.choices[0].text, plain.choices[0].text);
  assert.ok(!banned.choices[0].text.includes(word), `${JSON.stringify(word)} in ${JSON.stringify(banned.choices[0].text)}`);
});

test('4xx errors surface as the SDK\'s APIError subclasses with status, param and code', async () => {
  const rejectsWith = async (call: Promise<unknown>, expected: { status: number; param?: string | null; code?: string | null; type: abstract new (...args: never[]) => unknown }) => {
    await assert.rejects(call, (error: unknown) => {
      assert.ok(error instanceof expected.type, `expected ${expected.type.name}, got ${String(error)}`);
      const apiError = error as InstanceType<typeof OpenAI.APIError>;
      assert.equal(apiError.status, expected.status);
      if (expected.param !== undefined) assert.equal(apiError.param, expected.param);
      if (expected.code !== undefined) assert.equal(apiError.code, expected.code);
      assert.ok(apiError.requestID, 'x-request-id comes back');
      return true;
    });
  };
  await rejectsWith(client.chat.completions.create(chatParams({ temperature: -1 })), { status: 400, param: 'temperature', type: OpenAI.BadRequestError });
  await rejectsWith(client.chat.completions.create(chatParams({ top_p: 0 })), { status: 400, param: 'top_p', type: OpenAI.BadRequestError });
  await rejectsWith(client.completions.create(completionParams({ max_tokens: 10_000 })), { status: 400, param: 'max_tokens', code: 'context_length_exceeded', type: OpenAI.BadRequestError });
  await rejectsWith(client.completions.create(completionParams({ prompt: Array.from({ length: 3000 }, () => 100) })), { status: 400, param: 'prompt', code: 'context_length_exceeded', type: OpenAI.BadRequestError });
  await rejectsWith(client.chat.completions.create(chatParams({ model: 'gpt-4o' })), { status: 404, param: 'model', code: 'model_not_found', type: OpenAI.NotFoundError });
  await rejectsWith(client.chat.completions.create(chatParams({ messages: [] })), { status: 400, param: 'messages', type: OpenAI.BadRequestError });
  await rejectsWith(client.completions.create(completionParams({ prompt: [100_000] })), { status: 400, param: 'prompt', type: OpenAI.BadRequestError });
  await rejectsWith(client.completions.create(completionParams({ logit_bias: { '50': 101 } })), { status: 400, param: 'logit_bias', type: OpenAI.BadRequestError });
  await rejectsWith(client.chat.completions.create(chatParams({ logit_bias: { '100000': 1 } })), { status: 400, param: 'logit_bias', type: OpenAI.BadRequestError });
  await rejectsWith(client.chat.completions.create(chatParams({ allowed_token_ids: [] })), { status: 400, param: 'allowed_token_ids', type: OpenAI.BadRequestError });
  await rejectsWith(client.chat.completions.create(chatParams({ bad_words: [' '] })), { status: 400, param: 'bad_words', type: OpenAI.BadRequestError });
  await assert.rejects(client.completions.create(completionParams({ logit_bias: { abc: 1 } })), (e: unknown) => e instanceof OpenAI.BadRequestError && e.message.includes('logit_bias key "abc" is not a token id'));
  await rejectsWith(client.models.retrieve('other'), { status: 404, type: OpenAI.NotFoundError });
  // Streaming requests are validated before the stream starts, so they fail the same way.
  await rejectsWith(client.chat.completions.create({ ...chatParams({ n: 0 }), stream: true } as ChatCompletionCreateParamsStreaming), { status: 400, param: 'n', type: OpenAI.BadRequestError });
});

test('with an API key, the SDK needs the right one', async () => {
  const guarded = await startTinyServer({ server: { apiKey: 'sesame' } });
  try {
    const wrong = new OpenAI({ baseURL: `${guarded.url}/v1`, apiKey: 'open', maxRetries: 0 });
    await assert.rejects(wrong.models.list(), OpenAI.AuthenticationError);
    const right = new OpenAI({ baseURL: `${guarded.url}/v1`, apiKey: 'sesame', maxRetries: 0 });
    const completion = await right.completions.create({ ...completionParams(), model: undefined as unknown as string, max_tokens: 2 });
    assert.equal(completion.choices.length, 1);
  } finally {
    await guarded.close();
  }
});

// The Responses API on the default model, which writes code and never stops within a few tokens:
// its responses end incomplete at max_output_tokens. (A response that ends completed, tool calls and
// the exact prompt of a follow-up are shown with scripted output in responses-api.test.ts.)
test('responses on the default model: a follow-up through previous_response_id holds the first turn, its prompt and output served from the prefix cache', async () => {
  const { kv_cache: { block_size: blockSize } } = (await (await fetch(`${server.url}/v1/engine/stats`)).json()) as { kv_cache: { block_size: number } };
  // Outputs the model spells in other tokens than tokenizing their text gives ('class Stack:' does),
  // and others: the cached prefix covers the first turn either way.
  for (const input of ['def fibonacci(n):', 'class Stack:']) {
    const first = await client.responses.create({ model: MODEL, input, max_output_tokens: 40, temperature: 0 });
    assert.equal(first.status, 'incomplete');
    assert.deepEqual(first.incomplete_details, { reason: 'max_output_tokens' });
    assert.equal(first.usage?.output_tokens, 40);
    assert.ok(first.output_text.length > 0);
    const follow = await client.responses.create({ model: MODEL, previous_response_id: first.id, input: 'and in C?', max_output_tokens: 8, temperature: 0 });
    const firstUsage = first.usage;
    const followUsage = follow.usage;
    assert.ok(firstUsage && followUsage);
    // The follow-up's prompt is the first's, its output and the new input: more tokens than both.
    const firstTurn = firstUsage.input_tokens + firstUsage.output_tokens;
    assert.ok(followUsage.input_tokens > firstTurn, JSON.stringify({ firstUsage, followUsage }));
    // Every full block of the first turn's KV: its prompt and output but the last output token,
    // which was sampled and never run.
    assert.equal(followUsage.input_tokens_details.cached_tokens, Math.floor((firstTurn - 1) / blockSize) * blockSize, `${input}: ${JSON.stringify({ firstUsage, followUsage })}`);
    const alone = await client.responses.create({ model: MODEL, input: 'and in C?', max_output_tokens: 8, temperature: 0 });
    assert.ok((alone.usage?.input_tokens ?? 0) < followUsage.input_tokens);
  }
});

test('a streamed response on the default model: created first, text deltas, then the whole response as the last event', async () => {
  const events: ResponseStreamEvent[] = [];
  let text = '';
  for await (const event of await client.responses.create({ model: MODEL, input: 'def add(a, b):', max_output_tokens: 12, stream: true })) {
    events.push(event);
    if (event.type === 'response.output_text.delta') text += event.delta;
  }
  assert.equal(events[0].type, 'response.created');
  const last = events.at(-1);
  assert.ok(last?.type === 'response.incomplete' || last?.type === 'response.completed');
  const [message] = last.response.output;
  assert.ok(message.type === 'message' && message.content[0].type === 'output_text');
  assert.equal(message.content[0].text, text);
  if (last.type === 'response.incomplete') assert.equal(last.response.usage?.output_tokens, 12);
  assert.deepEqual(
    (await client.responses.retrieve(last.response.id)).output.map((item) => item.type),
    ['message'],
  );
});

test('tools with tool_choice "none" are accepted and ignored; calling them needs a tool-call parser, which this model\'s template does not show', async () => {
  const tools = [{ type: 'function' as const, function: { name: 'lookup', parameters: { type: 'object', properties: {} } } }];
  const ignored = await client.chat.completions.create({ ...chatParams({ seed: 7 }), tools, tool_choice: 'none' });
  const plain = await client.chat.completions.create(chatParams({ seed: 7 }));
  assert.equal(ignored.choices[0].message.content, plain.choices[0].message.content);
  await assert.rejects(client.chat.completions.create({ ...chatParams(), tools }), (error: unknown) => {
    assert.ok(error instanceof OpenAI.BadRequestError);
    assert.equal(error.param, 'tools');
    assert.match(error.message, /--tool-call-parser/);
    return true;
  });
});
