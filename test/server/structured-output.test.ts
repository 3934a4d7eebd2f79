import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import OpenAI from 'openai';
import type { ChatCompletionCreateParamsNonStreaming } from 'openai/resources/chat/completions';
import { PERSON_SCHEMA, schemaViolation } from '../helpers/json-schema-check.ts';
import { startTinyServer, waitForIdleEngine, type TinyServer } from './tiny-server.ts';

// Structured output through the official SDK, unchanged, against a Keel server over the embedded
// default model: OpenAI's response_format, and vLLM's structured_outputs and guided_* fields as
// extra body fields.

let server: TinyServer;
let client: OpenAI;
const MODEL = 'tiny';

before(async () => {
  server = await startTinyServer({ server: { servedModelName: MODEL }, defaultModel: true, engine: { numKvBlocks: 512 } });
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'not-checked', maxRetries: 0 });
});
after(() => server.close());

const chat = (extra: Record<string, unknown>) =>
  ({ model: MODEL, messages: [{ role: 'user', content: 'Describe a person.' }], max_tokens: 600, temperature: 1, ...extra }) as ChatCompletionCreateParamsNonStreaming;

const personFormat = { type: 'json_schema', json_schema: { name: 'person', strict: true, schema: PERSON_SCHEMA } } as const;

test('response_format json_schema: every sample at temperature 1 parses and validates (n = 4, three requests)', async () => {
  const completions = await Promise.all([1, 2, 3].map((seed) => client.chat.completions.create(chat({ seed, n: 4, response_format: personFormat }))));
  for (const choice of completions.flatMap((c) => c.choices)) {
    assert.equal(choice.finish_reason, 'stop');
    const value: unknown = JSON.parse(choice.message.content ?? '');
    assert.equal(schemaViolation(value, PERSON_SCHEMA), null, choice.message.content ?? '');
  }
  await waitForIdleEngine(server.url);
});

test('the SDK\'s parse() helper reads a json_schema answer as its object', async () => {
  const parsed = await client.chat.completions.parse(chat({ seed: 4, response_format: personFormat }));
  assert.equal(schemaViolation(parsed.choices[0].message.parsed, PERSON_SCHEMA), null);
});

test('response_format json_object answers a JSON object; streamed json_schema deltas add up to valid JSON', async () => {
  const object = await client.chat.completions.create(chat({ seed: 5, max_tokens: 60, response_format: { type: 'json_object' } }));
  const text = object.choices[0].message.content ?? '';
  if (object.choices[0].finish_reason === 'stop') {
    const value: unknown = JSON.parse(text);
    assert.ok(typeof value === 'object' && value !== null && !Array.isArray(value), text);
  } else {
    assert.ok(text.startsWith('{'), text);
  }
  const stream = await client.chat.completions.create({ ...chat({ seed: 6, response_format: personFormat }), stream: true });
  let streamed = '';
  for await (const chunk of stream) streamed += chunk.choices[0]?.delta.content ?? '';
  assert.equal(schemaViolation(JSON.parse(streamed), PERSON_SCHEMA), null, streamed);
});

test('vLLM\'s structured_outputs and guided_* fields constrain chat and completions alike', async () => {
  const regex = await client.completions.create({ model: MODEL, prompt: 'def f(x):', max_tokens: 30, temperature: 1, seed: 1, structured_outputs: { regex: '[0-9]{3}-[a-z]{2,5}' } } as never);
  assert.match(regex.choices[0].text, /^[0-9]{3}-[a-z]{2,5}$/);
  const choice = await client.chat.completions.create(chat({ seed: 2, structured_outputs: { choice: ['red', 'green', 'blue'] } }));
  assert.ok(['red', 'green', 'blue'].includes(choice.choices[0].message.content ?? ''));
  const guided = await client.completions.create({ model: MODEL, prompt: 'import os', max_tokens: 30, n: 3, temperature: 1, seed: 3, guided_choice: ['alpha', 'beta'] } as never);
  for (const c of guided.choices) assert.ok(['alpha', 'beta'].includes(c.text), c.text);
  const grammar = await client.chat.completions.create(chat({ seed: 4, guided_grammar: 'root ::= "x" [0-9] [0-9]' }));
  assert.match(grammar.choices[0].message.content ?? '', /^x[0-9]{2}$/);
  const schemaText = await client.chat.completions.create(chat({ seed: 5, guided_json: JSON.stringify(PERSON_SCHEMA) }));
  assert.equal(schemaViolation(JSON.parse(schemaText.choices[0].message.content ?? ''), PERSON_SCHEMA), null);
});

test('a bad schema, regex or grammar, or two structured outputs at once, is a 400 naming the field and the problem', async () => {
  const cases: [Record<string, unknown>, string, RegExp][] = [
    [{ response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'nope' } } } }, 'response_format.json_schema.schema', /the JSON schema is invalid: .*nope/],
    [{ structured_outputs: { regex: '[0-9' } }, 'structured_outputs.regex', /the regex is invalid: .*Unclosed/],
    [{ guided_grammar: 'root ::= "a" |' }, 'guided_grammar', /the grammar is invalid: EBNF parser error/],
    [{ guided_json: '{"type": ' }, 'guided_json', /not valid JSON text/],
    [{ response_format: { type: 'json_object' }, guided_regex: 'a+' }, 'guided_regex', /only one structured output may be asked for.*response_format, guided_regex/],
    [{ structured_outputs: {} }, 'structured_outputs', /must set one of json, regex, choice, grammar or json_object/],
    [{ response_format: { type: 'xml' } }, 'response_format.type', /"text", "json_object" or "json_schema"/],
  ];
  for (const [extra, param, message] of cases) {
    await assert.rejects(client.chat.completions.create(chat(extra)), (error: unknown) => {
      assert.ok(error instanceof OpenAI.BadRequestError, `${JSON.stringify(extra)}: ${String(error)}`);
      assert.equal(error.param, param, JSON.stringify(extra));
      assert.match(error.message, message);
      return true;
    });
  }
  const stats = await waitForIdleEngine(server.url);
  assert.equal(stats.running + stats.waiting, 0, 'nothing was queued');
});
