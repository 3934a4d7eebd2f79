import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import OpenAI from 'openai';
import type { ChatCompletionMessageParam, ChatCompletionTool } from 'openai/resources/chat/completions';
import { ECHO_MARKER, scriptMarker } from './scripted-engine-thread.ts';
import { startScriptedChatServer, type ScriptedChatServer } from './scripted-chat-server.ts';
import { waitForIdleEngine } from './tiny-server.ts';

// The official SDK, unchanged, against keel serve over a tiny random model with a Hermes (Qwen-style)
// chat template. Such a model never writes a tool call by itself, so the engine thread is the
// scripted one: it runs each request through the engine as usual but swaps the sampled tokens for
// those of the reply the test scripts (as a model that chose to call the tool would have written
// it), or of the prompt itself ([[echo]]), to show what the chat template rendered. Everything
// between the engine and the SDK (template, tool-call parsing, streaming) is the server's own.

let scripted: ScriptedChatServer;
let client: OpenAI;
const MODEL = 'hermes-tiny';

before(async () => {
  scripted = await startScriptedChatServer({ servedModelName: MODEL, forceIncludeUsage: true });
  client = scripted.client;
});
after(() => scripted.close());

const TOOLS: ChatCompletionTool[] = [
  {
    type: 'function',
    function: {
      name: 'get_weather',
      description: 'The weather in a city',
      parameters: { type: 'object', properties: { city: { type: 'string' }, unit: { type: 'string', enum: ['celsius', 'fahrenheit'] } }, required: ['city'] },
    },
  },
  { type: 'function', function: { name: 'get_time', description: 'The local time in a city', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } },
];

const call = (name: string, args: object) => `<tool_call>\n${JSON.stringify({ name, arguments: args })}\n</tool_call>`;
const WEATHER_CALL = call('get_weather', { city: 'Paris', unit: 'celsius' });
const BOTH_CALLS = `Let me look both up.\n${WEATHER_CALL}\n${call('get_time', { city: 'Paris' })}`;

const ask = (reply: string): ChatCompletionMessageParam[] => [{ role: 'user', content: `What is the weather in Paris? ${reply}` }];

test('tool_choice auto: the call is read from the output, with content null and finish_reason tool_calls', async () => {
  const completion = await client.chat.completions.create({ model: MODEL, messages: ask(scriptMarker(WEATHER_CALL)), tools: TOOLS, max_tokens: 300 });
  const [choice] = completion.choices;
  assert.equal(choice.finish_reason, 'tool_calls');
  assert.equal(choice.message.content, null);
  const calls = choice.message.tool_calls ?? [];
  assert.equal(calls.length, 1);
  assert.equal(calls[0].type, 'function');
  assert.match(calls[0].id, /^call_[0-9a-f]{24}$/);
  assert.ok(calls[0].type === 'function');
  assert.equal(calls[0].function.name, 'get_weather');
  assert.deepEqual(JSON.parse(calls[0].function.arguments), { city: 'Paris', unit: 'celsius' });
});

test('tool_choice required and a named function: calls parse; a named choice keeps only that function\'s calls', async () => {
  // The script stands in for the model's output, so this checks how calls are read and filtered;
  // that required / named outputs are constrained to calls is tool-choice-enforced.test.ts's.
  const required = await client.chat.completions.create({ model: MODEL, messages: ask(scriptMarker(BOTH_CALLS)), tools: TOOLS, tool_choice: 'required', max_tokens: 300 });
  const message = required.choices[0].message;
  assert.equal(message.content, 'Let me look both up.');
  assert.deepEqual(
    message.tool_calls?.map((c) => (c.type === 'function' ? [c.function.name, JSON.parse(c.function.arguments)] : null)),
    [
      ['get_weather', { city: 'Paris', unit: 'celsius' }],
      ['get_time', { city: 'Paris' }],
    ],
  );
  const named = await client.chat.completions.create({
    model: MODEL,
    messages: ask(scriptMarker(BOTH_CALLS)),
    tools: TOOLS,
    tool_choice: { type: 'function', function: { name: 'get_time' } },
    max_tokens: 300,
  });
  assert.deepEqual(
    named.choices[0].message.tool_calls?.map((c) => (c.type === 'function' ? c.function.name : null)),
    ['get_time'],
  );
  const single = await client.chat.completions.create({ model: MODEL, messages: ask(scriptMarker(BOTH_CALLS)), tools: TOOLS, parallel_tool_calls: false, max_tokens: 300 });
  assert.equal(single.choices[0].message.tool_calls?.length, 1);
});

test('streamed: the SDK assembles the tool_calls deltas; no delta shows the markup as content', async () => {
  const stream = client.chat.completions.stream({ model: MODEL, messages: ask(scriptMarker(BOTH_CALLS)), tools: TOOLS, max_tokens: 300 });
  const contentDeltas: string[] = [];
  let argumentDeltas = 0;
  for await (const chunk of stream) {
    for (const choice of chunk.choices) {
      if (choice.delta.content) contentDeltas.push(choice.delta.content);
      argumentDeltas += (choice.delta.tool_calls ?? []).filter((t) => (t.function?.arguments ?? '') !== '').length;
    }
  }
  const final = await stream.finalChatCompletion();
  const [choice] = final.choices;
  assert.equal(choice.finish_reason, 'tool_calls');
  assert.equal(contentDeltas.join(''), 'Let me look both up.');
  assert.ok(contentDeltas.every((d) => !d.includes('<')), JSON.stringify(contentDeltas));
  assert.ok(argumentDeltas > 2, `arguments arrive in pieces as the tokens come (${argumentDeltas} deltas)`);
  assert.deepEqual(
    choice.message.tool_calls?.map((c) => (c.type === 'function' ? [c.function.name, JSON.parse(c.function.arguments)] : null)),
    [
      ['get_weather', { city: 'Paris', unit: 'celsius' }],
      ['get_time', { city: 'Paris' }],
    ],
  );
  // --enable-force-include-usage: usage came though the request did not ask for it.
  assert.ok((final.usage?.completion_tokens ?? 0) > 0);
});

test('the chat template shows the tools to the model, and a tool result round trip renders the call and the result', async () => {
  const shown = await client.chat.completions.create({ model: MODEL, messages: ask(ECHO_MARKER), tools: TOOLS, max_tokens: 2000 });
  const prompt = shown.choices[0].message.content ?? '';
  assert.match(prompt, /<tools>\n\{"type": "function", "function": \{"name": "get_weather", "description": "The weather in a city"/);

  const first = await client.chat.completions.create({ model: MODEL, messages: ask(scriptMarker(WEATHER_CALL)), tools: TOOLS, max_tokens: 300 });
  const assistant = first.choices[0].message;
  const toolCall = assistant.tool_calls?.[0];
  assert.ok(toolCall);
  const history: ChatCompletionMessageParam[] = [...ask(''), assistant, { role: 'tool', tool_call_id: toolCall.id, content: '{"temperature": 22}' }];
  const answer = await client.chat.completions.create({ model: MODEL, messages: [...history, { role: 'user', content: scriptMarker('It is 22 °C in Paris.') }], tools: TOOLS, max_tokens: 300 });
  assert.equal(answer.choices[0].message.content, 'It is 22 °C in Paris.');
  assert.equal(answer.choices[0].finish_reason, 'stop');
  assert.equal(answer.choices[0].message.tool_calls, undefined);

  // tool_choice "none", else the echoed prompt's own <tool_call> block would be read as a call.
  const rendered = await client.chat.completions.create({ model: MODEL, messages: [...history, { role: 'user', content: ECHO_MARKER }], tools: TOOLS, tool_choice: 'none', max_tokens: 2000 });
  const text = rendered.choices[0].message.content ?? '';
  assert.ok(text.includes('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>'), text);
  assert.ok(text.includes('<tool_response>\n{"temperature": 22}\n</tool_response>'), text);
  assert.deepEqual(await waitForIdleEngine(scripted.server.url).then((s) => s.running), 0);
});

test('tool_choice "none" is accepted with tools and ignores them: nothing is rendered, the output is content', async () => {
  const completion = await client.chat.completions.create({ model: MODEL, messages: ask(ECHO_MARKER), tools: TOOLS, tool_choice: 'none', max_tokens: 2000 });
  const text = completion.choices[0].message.content ?? '';
  assert.ok(!text.includes('<tools>'), text);
  const markup = await client.chat.completions.create({ model: MODEL, messages: ask(scriptMarker(WEATHER_CALL)), tools: TOOLS, tool_choice: 'none', max_tokens: 300 });
  assert.equal(markup.choices[0].message.content, WEATHER_CALL);
  assert.equal(markup.choices[0].message.tool_calls, undefined);
});

test('tool requests that cannot be answered are 400s naming the field', async () => {
  const rejects = async (body: Record<string, unknown>, param: string, message: RegExp) => {
    await assert.rejects(client.chat.completions.create({ model: MODEL, messages: ask(''), max_tokens: 5, ...body } as never), (error: unknown) => {
      assert.ok(error instanceof OpenAI.BadRequestError, String(error));
      assert.equal(error.param, param);
      assert.match(error.message, message);
      return true;
    });
  };
  await rejects({ tools: TOOLS, tool_choice: { type: 'function', function: { name: 'launch' } } }, 'tool_choice', /"launch", which is not among the tools \(get_weather, get_time\)/);
  await rejects({ tool_choice: 'required' }, 'tool_choice', /needs tools/);
  await rejects({ tools: [TOOLS[0], TOOLS[0]] }, 'tools[1].function.name', /given twice/);
  await rejects({ tools: [{ type: 'function', function: { name: 'no spaces allowed' } }] }, 'tools[0].function.name', /letters, digits/);
  await rejects({ messages: [{ role: 'tool', content: '1' }] }, 'messages[0].tool_call_id', /tool_call_id/);
});
