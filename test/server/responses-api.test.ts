import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import OpenAI from 'openai';
import type { FunctionTool, ResponseStreamEvent } from 'openai/resources/responses/responses';
import { hermesChatModelDir } from './hermes-chat-model.ts';
import { ECHO_MARKER, scriptMarker } from './scripted-engine-thread.ts';
import { startTinyServer, type TinyServer } from './tiny-server.ts';

// The Responses API through the official SDK, unchanged, against keel serve over a tiny random model
// with a Hermes (Qwen-style) chat template. The engine thread is the scripted one (see
// scripted-engine-thread.ts): requests run through the engine as usual, but the reply is the text
// the test scripts, or the rendered prompt itself ([[echo]]), so a test can show what a follow-up's
// prompt held. The default model's run of the same API is in openai-sdk.test.ts.

let server: TinyServer;
let client: OpenAI;
let model: { dir: string; remove: () => void };
const MODEL = 'hermes-tiny';

before(async () => {
  model = hermesChatModelDir();
  server = await startTinyServer({ modelDir: model.dir, engineEntry: new URL('./scripted-engine-thread.ts', import.meta.url), server: { servedModelName: MODEL, responsesStoreSize: 4 } });
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'not-checked', maxRetries: 0 });
});
after(async () => {
  await server.close();
  model.remove();
});

const WEATHER: FunctionTool = {
  type: 'function',
  name: 'get_weather',
  description: 'The weather in a city',
  parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  strict: true,
};
const WEATHER_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>';

test('responses.create: a string input answers a message item; GET reads the stored response back and DELETE drops it', async () => {
  const response = await client.responses.create({ model: MODEL, input: `Say hello. ${scriptMarker('Hello there!')}`, max_output_tokens: 200 });
  assert.match(response.id, /^resp_/);
  assert.equal(response.object, 'response');
  assert.equal(response.status, 'completed');
  assert.equal(response.model, MODEL);
  assert.equal(response.output_text, 'Hello there!');
  assert.equal(response.output.length, 1);
  const [item] = response.output;
  assert.ok(item.type === 'message');
  assert.match(item.id, /^msg_/);
  assert.deepEqual(item.content, [{ type: 'output_text', text: 'Hello there!', annotations: [], logprobs: [] }]);
  const usage = response.usage;
  assert.ok(usage);
  assert.equal(usage.total_tokens, usage.input_tokens + usage.output_tokens);
  assert.ok(usage.output_tokens > 0);

  const stored = await client.responses.retrieve(response.id);
  assert.deepEqual({ ...stored, output_text: undefined }, { ...response, output_text: undefined });
  const deleted = (await (await fetch(`${server.url}/v1/responses/${response.id}`, { method: 'DELETE' })).json()) as Record<string, unknown>;
  assert.deepEqual(deleted, { id: response.id, object: 'response', deleted: true });
  await assert.rejects(client.responses.retrieve(response.id), OpenAI.NotFoundError);
});

test('previous_response_id carries the conversation (not the earlier instructions), and the follow-up\'s shared prefix comes from the prefix cache', async () => {
  const first = await client.responses.create({
    model: MODEL,
    instructions: 'Be brief.',
    input: `My name is Ada and I like long walks along the river. ${scriptMarker('Nice to meet you, Ada.')}`,
    max_output_tokens: 200,
  });
  const follow = await client.responses.create({ model: MODEL, previous_response_id: first.id, instructions: 'Answer in French.', input: `What is my name? ${ECHO_MARKER}`, max_output_tokens: 2000 });
  const prompt = follow.output_text;
  assert.ok(prompt.includes('My name is Ada and I like long walks along the river.'), prompt);
  assert.ok(prompt.includes('<|im_start|>assistant\nNice to meet you, Ada.<|im_end|>'), prompt);
  assert.ok(prompt.includes('Answer in French.') && !prompt.includes('Be brief.'), prompt);
  assert.equal(follow.previous_response_id, first.id);
  assert.ok((follow.usage?.input_tokens_details.cached_tokens ?? 0) > 0, JSON.stringify(follow.usage));
  assert.equal(first.usage?.input_tokens_details.cached_tokens, 0);

  await assert.rejects(client.responses.create({ model: MODEL, previous_response_id: 'resp_unknown', input: 'x' }), (error: unknown) => {
    assert.ok(error instanceof OpenAI.NotFoundError);
    assert.equal(error.param, 'previous_response_id');
    return true;
  });
  const unstored = await client.responses.create({ model: MODEL, store: false, input: scriptMarker('ok'), max_output_tokens: 20 });
  await assert.rejects(client.responses.retrieve(unstored.id), OpenAI.NotFoundError);
});

test('the store keeps the most recent --responses-store-size responses', async () => {
  const ids: string[] = [];
  for (let i = 0; i < 5; i++) ids.push((await client.responses.create({ model: MODEL, input: scriptMarker(`reply ${i}`), max_output_tokens: 20 })).id);
  await assert.rejects(client.responses.retrieve(ids[0]), OpenAI.NotFoundError);
  assert.equal((await client.responses.retrieve(ids[4])).output_text, 'reply 4');
});

test('a function call is a function_call item; its output sent back as function_call_output gets the answer', async () => {
  const first = await client.responses.create({ model: MODEL, input: `Weather in Paris? ${scriptMarker(WEATHER_CALL)}`, tools: [WEATHER], max_output_tokens: 200 });
  const [call] = first.output;
  assert.ok(call.type === 'function_call', JSON.stringify(first.output));
  assert.equal(call.name, 'get_weather');
  assert.deepEqual(JSON.parse(call.arguments), { city: 'Paris' });
  assert.match(call.call_id, /^call_/);
  assert.equal(first.output_text, '');

  const answer = await client.responses.create({
    model: MODEL,
    previous_response_id: first.id,
    input: [{ type: 'function_call_output', call_id: call.call_id, output: `{"temperature": 22} ${scriptMarker('It is 22 degrees in Paris.')}` }],
    tools: [WEATHER],
    max_output_tokens: 200,
  });
  assert.equal(answer.output_text, 'It is 22 degrees in Paris.');
  // The same conversation sent whole, as input items, renders the call and its result.
  const echoed = await client.responses.create({
    model: MODEL,
    input: [
      { role: 'user', content: 'Weather in Paris?' },
      { type: 'function_call', call_id: call.call_id, name: call.name, arguments: call.arguments },
      { type: 'function_call_output', call_id: call.call_id, output: `{"temperature": 22} ${ECHO_MARKER}` },
    ],
    tools: [WEATHER],
    tool_choice: 'none',
    max_output_tokens: 2000,
  });
  assert.ok(echoed.output_text.includes('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'), echoed.output_text);
  assert.ok(echoed.output_text.includes('<tool_response>\n{"temperature": 22}'), echoed.output_text);
});

test('input_items lists a response\'s own input items, newest first by default, a page at a time', async () => {
  const input = [
    { role: 'user' as const, content: 'Weather in Paris?' },
    { type: 'function_call' as const, call_id: 'call_1', name: 'get_weather', arguments: '{"city": "Paris"}' },
    { type: 'function_call_output' as const, call_id: 'call_1', output: `{"temperature": 22} ${scriptMarker('22 degrees.')}` },
  ];
  const response = await client.responses.create({ model: MODEL, input, tools: [WEATHER], max_output_tokens: 200 });
  const all = [];
  for await (const item of client.responses.inputItems.list(response.id, { order: 'asc', limit: 2 })) all.push(item);
  assert.deepEqual(
    all.map((item) => item.type),
    ['message', 'function_call', 'function_call_output'],
  );
  assert.ok(all[0].type === 'message');
  assert.deepEqual(all[0].content, [{ type: 'input_text', text: 'Weather in Paris?' }]);
  assert.ok(all.every((item) => typeof item.id === 'string' && item.id !== ''));
  const newest = await client.responses.inputItems.list(response.id);
  assert.deepEqual(newest.data.map((item) => item.id), all.map((item) => item.id).reverse());
  assert.equal(newest.has_more, false);
  // A follow-up lists its own input, not the conversation it continues.
  const next = await client.responses.create({ model: MODEL, previous_response_id: response.id, input: `And Rome? ${scriptMarker('Also 22.')}`, max_output_tokens: 200 });
  assert.deepEqual((await client.responses.inputItems.list(next.id)).data.map((item) => item.type), ['message']);
  await assert.rejects(client.responses.inputItems.list('resp_unknown'), (error: unknown) => error instanceof OpenAI.NotFoundError);
  await assert.rejects(client.responses.inputItems.list(response.id, { limit: 500 }), (error: unknown) => error instanceof OpenAI.BadRequestError && error.param === 'limit');
});

function eventTypes(events: ResponseStreamEvent[]): string[] {
  // Runs of deltas collapse to one entry: how many there are depends on the tokenizer.
  return events.map((e) => e.type).filter((type, i, all) => !(type.endsWith('.delta') && all[i - 1] === type));
}

test('a streamed response sends the documented events in order and ends with response.completed', async () => {
  const stream = await client.responses.create({ model: MODEL, input: `Hi. ${scriptMarker('Hello there, friend!')}`, max_output_tokens: 200, stream: true });
  const events: ResponseStreamEvent[] = [];
  for await (const event of stream) events.push(event);
  assert.deepEqual(eventTypes(events), [
    'response.created',
    'response.in_progress',
    'response.output_item.added',
    'response.content_part.added',
    'response.output_text.delta',
    'response.output_text.done',
    'response.content_part.done',
    'response.output_item.done',
    'response.completed',
  ]);
  assert.deepEqual(
    events.map((e) => e.sequence_number),
    events.map((_, i) => i),
  );
  const text = events.flatMap((e) => (e.type === 'response.output_text.delta' ? [e.delta] : [])).join('');
  assert.equal(text, 'Hello there, friend!');
  const completed = events.at(-1);
  assert.ok(completed?.type === 'response.completed');
  const [message] = completed.response.output;
  assert.ok(message.type === 'message' && message.content[0].type === 'output_text');
  assert.equal(message.content[0].text, text);
  assert.equal((await client.responses.retrieve(completed.response.id)).status, 'completed');
});

test('a streamed function call: the SDK\'s stream helper assembles the arguments, and the response ends completed', async () => {
  const stream = client.responses.stream({ model: MODEL, input: `Weather? ${scriptMarker(`Checking.\n${WEATHER_CALL}`)}`, tools: [WEATHER], max_output_tokens: 200 });
  const types: string[] = [];
  for await (const event of stream) types.push(event.type);
  const final = await stream.finalResponse();
  assert.equal(final.status, 'completed');
  assert.deepEqual(
    final.output.map((item) => item.type),
    ['message', 'function_call'],
  );
  const call = final.output[1];
  assert.ok(call.type === 'function_call');
  assert.deepEqual(JSON.parse(call.arguments), { city: 'Paris' });
  assert.equal(final.output_text, 'Checking.');
  assert.ok(types.includes('response.function_call_arguments.delta') && types.includes('response.function_call_arguments.done'));
  assert.equal(types.at(-1), 'response.completed');
});

test('cut by max_output_tokens, a response is incomplete; streamed, it ends with response.incomplete', async () => {
  const cut = await client.responses.create({ model: MODEL, input: scriptMarker('a reply much longer than four tokens'), max_output_tokens: 4 });
  assert.equal(cut.status, 'incomplete');
  assert.deepEqual(cut.incomplete_details, { reason: 'max_output_tokens' });
  assert.equal(cut.usage?.output_tokens, 4);
  const events: ResponseStreamEvent[] = [];
  for await (const event of await client.responses.create({ model: MODEL, input: scriptMarker('a reply much longer than four tokens'), max_output_tokens: 4, stream: true })) events.push(event);
  assert.equal(events.at(-1)?.type, 'response.incomplete');
});

test('what the Responses API cannot do here is a 400 naming the field as the Responses request spells it', async () => {
  const rejects = async (body: Record<string, unknown>, param: string, message: RegExp) => {
    await assert.rejects(client.responses.create({ model: MODEL, input: 'x', ...body } as never), (error: unknown) => {
      assert.ok(error instanceof OpenAI.BadRequestError, String(error));
      assert.equal(error.param, param);
      assert.match(error.message, message);
      return true;
    });
  };
  await rejects({ tools: [{ type: 'web_search_preview' }] }, 'tools[0]', /only function tools are supported \(got "web_search_preview"\)/);
  await rejects({ input: [{ role: 'user', content: [{ type: 'input_image', image_url: 'x' }] }] }, 'input[0].content', /text only/);
  await rejects({ max_output_tokens: 0 }, 'max_output_tokens', /max_output_tokens/);
  await rejects({ tool_choice: { type: 'function', name: 'nope' }, tools: [WEATHER] }, 'tool_choice', /"nope", which is not among the tools/);
  await rejects({ background: true }, 'background', /not supported/);
});
