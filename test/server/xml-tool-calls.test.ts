import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import OpenAI from 'openai';
import type { ChatCompletionTool } from 'openai/resources/chat/completions';
import { startScriptedChatServer, type ScriptedChatServer } from './scripted-chat-server.ts';
import { scriptMarker } from './scripted-engine-thread.ts';

// A format whose argument values are bare text (qwen3_coder, named by --tool-call-parser) through
// keel serve and the official SDK, with the scripted engine thread of tool-calling.test.ts: the
// request's tool schemas travel from preprocessing to the parser, which reads each value as text
// or JSON by them, streamed or not.

let scripted: ScriptedChatServer;
let client: OpenAI;
const MODEL = 'qwen3-coder-tiny';

before(async () => {
  scripted = await startScriptedChatServer({ servedModelName: MODEL, toolCallParser: 'qwen3_coder' });
  client = scripted.client;
});
after(() => scripted.close());

const TOOLS: ChatCompletionTool[] = [
  {
    type: 'function',
    function: {
      name: 'write_file',
      parameters: { type: 'object', properties: { path: { type: 'string' }, content: { type: 'string' }, mode: { type: 'integer' } }, required: ['path', 'content'] },
    },
  },
];
const CONTENT = 'x = {"a": 1}\nprint(x < 2)';
const REPLY = `I will write it.\n<tool_call>\n<function=write_file>\n<parameter=path>\n2024\n</parameter>\n<parameter=content>\n${CONTENT}\n</parameter>\n<parameter=mode>\n644\n</parameter>\n</function>\n</tool_call>`;
const EXPECTED = [['write_file', { path: '2024', content: CONTENT, mode: 644 }]];

test('values are read by the tools\' schemas: a string stays text even where it is JSON (the path 2024), an integer is a number', async () => {
  const completion = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: scriptMarker(REPLY) }], tools: TOOLS, max_tokens: 300 });
  const [choice] = completion.choices;
  assert.equal(choice.finish_reason, 'tool_calls');
  assert.equal(choice.message.content, 'I will write it.');
  assert.deepEqual(
    choice.message.tool_calls?.map((c) => (c.type === 'function' ? [c.function.name, JSON.parse(c.function.arguments)] : null)),
    EXPECTED,
  );
});

test('streamed: the arguments arrive in pieces and the SDK assembles the same call; no markup shows as content', async () => {
  const stream = client.chat.completions.stream({ model: MODEL, messages: [{ role: 'user', content: scriptMarker(REPLY) }], tools: TOOLS, max_tokens: 300 });
  let content = '';
  let argumentDeltas = 0;
  for await (const chunk of stream) {
    for (const choice of chunk.choices) {
      content += choice.delta.content ?? '';
      argumentDeltas += (choice.delta.tool_calls ?? []).filter((t) => (t.function?.arguments ?? '') !== '').length;
    }
  }
  const [choice] = (await stream.finalChatCompletion()).choices;
  assert.equal(content, 'I will write it.');
  assert.ok(argumentDeltas > 2, `the string values stream as their tokens come (${argumentDeltas} deltas)`);
  assert.deepEqual(
    choice.message.tool_calls?.map((c) => (c.type === 'function' ? [c.function.name, JSON.parse(c.function.arguments)] : null)),
    EXPECTED,
  );
});
