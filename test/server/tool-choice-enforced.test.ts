import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import OpenAI from 'openai';
import type { ChatCompletionCreateParamsNonStreaming, ChatCompletionTool } from 'openai/resources/chat/completions';
import type { FunctionTool } from 'openai/resources/responses/responses';
import { PERSON_SCHEMA, schemaViolation } from '../helpers/json-schema-check.ts';
import { startTinyServer, waitForIdleEngine, type TinyServer } from './tiny-server.ts';

// tool_choice "required" and a named function, through the official SDK unchanged, against a Keel
// server over the embedded default model (a code model that never saw a tool) at temperature 1,
// with the Hermes parser: the output is constrained to <tool_call> blocks with each function's
// parameter schema inside, so every call parses and validates, whatever the model would rather write.

let server: TinyServer;
let client: OpenAI;
const MODEL = 'tiny';

before(async () => {
  server = await startTinyServer({ server: { servedModelName: MODEL, toolCallParser: 'hermes' }, defaultModel: true, engine: { numKvBlocks: 512 } });
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'not-checked', maxRetries: 0 });
});
after(() => server.close());

const WEATHER = {
  type: 'object',
  properties: { city: { type: 'string', maxLength: 16 }, unit: { type: 'string', enum: ['celsius', 'fahrenheit'] } },
  required: ['city', 'unit'],
};
const SCHEMAS: Record<string, Record<string, unknown>> = { get_weather: WEATHER, add_person: PERSON_SCHEMA };
const TOOLS: ChatCompletionTool[] = Object.entries(SCHEMAS).map(([name, parameters]) => ({ type: 'function', function: { name, parameters } }));

const chat = (extra: Partial<ChatCompletionCreateParamsNonStreaming>): ChatCompletionCreateParamsNonStreaming => ({
  model: MODEL,
  messages: [{ role: 'user', content: 'What is the weather in Paris?' }],
  tools: TOOLS,
  temperature: 1,
  max_tokens: 400,
  ...extra,
});

/** Where a call's arguments break its function's schema, or null. */
function violation(name: string, args: string): string | null {
  const schema = SCHEMAS[name];
  if (schema === undefined) return `a call to ${name}, which was not offered`;
  try {
    return schemaViolation(JSON.parse(args), schema);
  } catch {
    return `arguments that do not parse: ${args}`;
  }
}

test('required, one call: every sample at temperature 1 is one call whose arguments parse and validate (n = 4, three seeds)', async () => {
  const completions = await Promise.all([1, 2, 3].map((seed) => client.chat.completions.create(chat({ seed, n: 4, tool_choice: 'required', parallel_tool_calls: false }))));
  for (const choice of completions.flatMap((c) => c.choices)) {
    const what = JSON.stringify(choice.message);
    assert.equal(choice.finish_reason, 'tool_calls', what);
    assert.equal(choice.message.content, null, what);
    const calls = choice.message.tool_calls ?? [];
    assert.equal(calls.length, 1, what);
    assert.ok(calls[0].type === 'function');
    assert.equal(violation(calls[0].function.name, calls[0].function.arguments), null, what);
  }
  await waitForIdleEngine(server.url);
});

test('required with parallel calls: every call the output completes validates', async () => {
  const completion = await client.chat.completions.create(chat({ seed: 4, n: 2, tool_choice: 'required', max_tokens: 200 }));
  for (const choice of completion.choices) {
    const calls = (choice.message.tool_calls ?? []).flatMap((c) => (c.type === 'function' ? [c.function] : []));
    assert.ok(calls.length >= 1, JSON.stringify(choice.message));
    // A model that keeps calling is cut by max_tokens like any output: the last call may be cut.
    const complete = choice.finish_reason === 'tool_calls' ? calls : calls.slice(0, -1);
    for (const call of complete) assert.equal(violation(call.name, call.arguments), null, JSON.stringify(call));
  }
});

test('a named function, streamed: the SDK assembles one call to it, and its arguments validate', async () => {
  for (const seed of [5, 6]) {
    const stream = client.chat.completions.stream({ ...chat({ seed, tool_choice: { type: 'function', function: { name: 'add_person' } }, parallel_tool_calls: false }), stream: true });
    let argumentDeltas = 0;
    for await (const chunk of stream) argumentDeltas += (chunk.choices[0]?.delta.tool_calls ?? []).filter((t) => (t.function?.arguments ?? '') !== '').length;
    const [choice] = (await stream.finalChatCompletion()).choices;
    assert.equal(choice.finish_reason, 'tool_calls');
    const calls = (choice.message.tool_calls ?? []).flatMap((c) => (c.type === 'function' ? [c.function] : []));
    assert.deepEqual(
      calls.map((c) => [c.name, violation(c.name, c.arguments)]),
      [['add_person', null]],
    );
    assert.ok(argumentDeltas > 3, `the arguments streamed in pieces (${argumentDeltas})`);
  }
});

test('/v1/responses: required and a named function answer function_call items whose arguments validate, streamed or not', async () => {
  const tools: FunctionTool[] = Object.entries(SCHEMAS).map(([name, parameters]) => ({ type: 'function', name, parameters, strict: true }));
  const base = { model: MODEL, input: 'Add a person.', tools, temperature: 1, max_output_tokens: 400, parallel_tool_calls: false };
  const required = await client.responses.create({ ...base, tool_choice: 'required' });
  const named = await client.responses.create({ ...base, tool_choice: { type: 'function', name: 'get_weather' } });
  const stream = client.responses.stream({ ...base, tool_choice: 'required' });
  const streamed = await stream.finalResponse();
  for (const response of [required, named, streamed]) {
    assert.equal(response.status, 'completed', JSON.stringify(response.output));
    const calls = response.output.flatMap((item) => (item.type === 'function_call' ? [item] : []));
    assert.equal(calls.length, 1, JSON.stringify(response.output));
    assert.equal(response.output.length, 1, 'no message item beside the call');
    assert.equal(violation(calls[0].name, calls[0].arguments), null, calls[0].arguments);
  }
  const namedCall = named.output[0];
  assert.ok(namedCall.type === 'function_call' && namedCall.name === 'get_weather');
});

test('a parameter schema xgrammar cannot use is a 400 naming the tool, before anything is queued; so is a second constraint', async () => {
  const badTools: ChatCompletionTool[] = [TOOLS[0], { type: 'function', function: { name: 'broken', parameters: { type: 'nope' } } }];
  const rejects = async (request: Promise<unknown>, param: string, message: RegExp) => {
    await assert.rejects(request, (error: unknown) => {
      assert.ok(error instanceof OpenAI.BadRequestError, String(error));
      assert.equal(error.param, param);
      assert.match(error.message, message);
      return true;
    });
  };
  await rejects(client.chat.completions.create(chat({ tools: badTools, tool_choice: 'required' })), 'tools[1].function.parameters', /the parameters of "broken": the JSON schema is invalid: .*nope/);
  await rejects(
    client.responses.create({ model: MODEL, input: 'x', tools: [{ type: 'function', name: 'broken', parameters: { type: 'nope' }, strict: true }], tool_choice: 'required' }),
    'tools[0].parameters',
    /the parameters of "broken"/,
  );
  await rejects(
    client.chat.completions.create(chat({ tool_choice: 'required', response_format: { type: 'json_object' } })),
    'response_format',
    /cannot be combined with tool_choice "required"/,
  );
  const stats = await waitForIdleEngine(server.url);
  assert.equal(stats.running + stats.waiting, 0, 'nothing was queued');
});
