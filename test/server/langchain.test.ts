import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { AIMessageChunk, HumanMessage } from '@langchain/core/messages';
import { tool } from '@langchain/core/tools';
import { ChatOpenAI, type ChatOpenAIFields } from '@langchain/openai';
import { z } from 'zod';
import { startTinyServer, type TinyServer } from './tiny-server.ts';

// LangChain JS (`@langchain/openai`'s ChatOpenAI) with its defaults against a Keel server over the
// embedded default model (a code model, at temperature 1) with the Hermes parser: plain and
// streamed chat, withStructuredOutput (its json_schema default, and function calling, which forces
// a named tool), bindTools with a forced call and the tool result sent back, on the chat
// completions path and on the Responses API, which ChatOpenAI switches to by itself when a call
// needs it (previous_response_id here) or when asked (useResponsesApi).

let server: TinyServer;
const requests: { url: string; body: Record<string, unknown> }[] = [];

before(async () => {
  server = await startTinyServer({ server: { servedModelName: 'tiny', toolCallParser: 'hermes' }, defaultModel: true, engine: { numKvBlocks: 512 } });
});
after(() => server.close());

/** A ChatOpenAI on the test server that notes every request it sends. */
function chatModel(fields: ChatOpenAIFields = {}): ChatOpenAI {
  const fetchNoted: typeof fetch = async (url, init) => {
    requests.push({ url: String(url), body: JSON.parse(String(init?.body ?? '{}')) as Record<string, unknown> });
    return fetch(url, init);
  };
  return new ChatOpenAI({ model: 'tiny', apiKey: 'not-checked', temperature: 1, maxTokens: 200, maxRetries: 0, configuration: { baseURL: `${server.url}/v1`, fetch: fetchNoted }, ...fields });
}

const lastPath = () => new URL(requests.at(-1)?.url ?? 'http://x/').pathname;

const PERSON = z.object({ name: z.string().max(20), age: z.number().int().min(0).max(120), admin: z.boolean() });
const weather = tool(async ({ city }) => JSON.stringify({ city, celsius: 21 }), {
  name: 'weather',
  description: 'The weather in a city',
  schema: z.object({ city: z.string().max(16) }),
});

test('invoke and stream, on chat completions and on the Responses API', async () => {
  for (const useResponsesApi of [false, true]) {
    const model = chatModel({ maxTokens: 12, useResponsesApi });
    const message = await model.invoke('def add(a, b):');
    assert.equal(message.usage_metadata?.output_tokens, 12);
    assert.equal(lastPath(), useResponsesApi ? '/v1/responses' : '/v1/chat/completions');
    let streamed: AIMessageChunk | undefined;
    for await (const chunk of await model.stream('def add(a, b):')) streamed = streamed === undefined ? chunk : streamed.concat(chunk);
    assert.ok((streamed?.text ?? '').length > 0);
  }
});

test('withStructuredOutput: every answer at temperature 1 is valid under the zod schema (json_schema and function calling, both APIs)', async () => {
  for (const useResponsesApi of [false, true]) {
    for (const method of ['jsonSchema', 'functionCalling'] as const) {
      const structured = chatModel({ useResponsesApi }).withStructuredOutput(PERSON, { method });
      for (const seed of [1, 2]) {
        const person = await structured.invoke('A person', { seed } as never);
        assert.deepEqual(PERSON.parse(person), person, `${method} (responses: ${useResponsesApi})`);
      }
    }
  }
  let last: unknown;
  for await (const partial of await chatModel().withStructuredOutput(PERSON).stream('A person')) last = partial;
  assert.deepEqual(PERSON.parse(last), last);
});

test('bindTools: a forced call validates, runs, and its result goes back for the answer, on both APIs', async () => {
  for (const useResponsesApi of [false, true]) {
    // LangChain 1.5's Responses path sends a named tool_choice but drops "required": name the tool.
    const forced = chatModel({ useResponsesApi }).bindTools([weather], { tool_choice: 'weather', parallel_tool_calls: false });
    const question = new HumanMessage('What is the weather in Paris?');
    const asked = await forced.invoke([question]);
    assert.equal(asked.tool_calls?.length, 1, JSON.stringify(asked.content));
    const result = await weather.invoke(asked.tool_calls![0]);
    const answer = await chatModel({ useResponsesApi, maxTokens: 16 }).bindTools([weather]).invoke([question, asked, result]);
    assert.equal(answer.usage_metadata?.output_tokens, 16);
    const sent = JSON.stringify(requests.at(-1)?.body);
    assert.ok(sent.includes(asked.tool_calls![0].id!) && sent.includes('"celsius\\":21'), sent);
  }
  const required = await chatModel().bindTools([weather], { tool_choice: 'required', parallel_tool_calls: false }).invoke('Weather?');
  assert.deepEqual(required.tool_calls?.map((c) => [c.name, z.object({ city: z.string().max(16) }).safeParse(c.args).success]), [['weather', true]]);
  let streamed: AIMessageChunk | undefined;
  for await (const chunk of await chatModel({ streaming: true }).bindTools([weather], { tool_choice: 'weather', parallel_tool_calls: false }).stream('Weather?')) {
    streamed = streamed === undefined ? chunk : streamed.concat(chunk);
  }
  assert.deepEqual(streamed?.tool_calls?.map((c) => c.name), ['weather']);
});

test('the automatic switch to the Responses API (previous_response_id) carries the conversation, served from the prefix cache', async () => {
  const first = await chatModel({ useResponsesApi: true, maxTokens: 24 }).invoke('def fibonacci(n):');
  const next = await chatModel({ maxTokens: 8 }).invoke('Now in C.', { previous_response_id: first.id } as never);
  assert.equal(lastPath(), '/v1/responses', 'ChatOpenAI switched by itself');
  assert.ok((next.usage_metadata?.input_tokens ?? 0) > (first.usage_metadata?.input_tokens ?? 0) + 24, 'the first turn is in the prompt');
  assert.ok((next.usage_metadata?.input_token_details?.cache_read ?? 0) > 0, 'the shared prefix came from the prefix cache');
});
