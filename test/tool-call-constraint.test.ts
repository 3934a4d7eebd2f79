import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { LLM } from '../src/engine/llm.ts';
import type { CallableFunction } from '../src/server/tool-calls/call-markup.ts';
import { TOOL_CALL_PARSERS, toolCallFormat } from '../src/server/tool-calls/tool-call-formats.ts';
import { PERSON_SCHEMA, schemaViolation } from './helpers/json-schema-check.ts';

// tool_choice "required" and named functions as the server constrains them: each parser's markup
// with the functions' parameter schemas inside (ToolCallFormat.callsOnly), sampled at temperature 1
// by the embedded default model, a code model that has never seen any of these formats, on the CPU
// backend. The grammar alone makes it write calls that the same parser reads back.

let llm: LLM;
before(async () => {
  llm = await LLM.load({ backend: 'cpu', showProgress: false, numKvBlocks: 512 });
});
after(() => llm.close());

const WEATHER = {
  type: 'object',
  properties: { city: { type: 'string', maxLength: 16 }, unit: { type: 'string', enum: ['celsius', 'fahrenheit'] } },
  required: ['city', 'unit'],
};
const FUNCTIONS: CallableFunction[] = [
  { name: 'get_weather', parameters: WEATHER },
  { name: 'add_person', parameters: PERSON_SCHEMA },
];
const PROMPTS = ['def fibonacci(n):', 'import os\n'];

/** Each parser, with the chat-template text that picks each of its dialects. */
const DIALECTS: [string, string | null][] = TOOL_CALL_PARSERS.flatMap((name): [string, string | null][] => {
  if (name === 'mistral') return [[name, null], [name, '{{ "[TOOL_CALLS]" + name + "[ARGS]" + arguments }}']];
  if (name === 'deepseek') return [[name, null], [name, "{{ '```json' }}"]];
  if (name === 'glm45') return [[name, null], [name, '<arg_key>{{ k }}</arg_key><arg_value>']];
  return [[name, null]];
});

/** Where a call breaks its function's schema (or names no function given), or null. */
function callViolation(call: { name: string; arguments: string }, functions: CallableFunction[]): string | null {
  const fn = functions.find((f) => f.name === call.name);
  if (fn === undefined) return `a call to ${call.name}, which was not offered`;
  let args: unknown;
  try {
    args = JSON.parse(call.arguments);
  } catch {
    return `arguments that do not parse: ${call.arguments}`;
  }
  return schemaViolation(args, fn.parameters as Record<string, unknown>);
}

test('one call (parallel_tool_calls false): every sample is exactly one call that parses and validates, in every format', async () => {
  for (const [name, template] of DIALECTS) {
    const format = toolCallFormat(name)!;
    const structuredOutput = { type: 'structural_tag' as const, format: format.callsOnly(FUNCTIONS, false, template) };
    const outputs = await llm.generate(PROMPTS, { temperature: 1, seed: 1, n: 3, maxTokens: 400, structuredOutput });
    for (const c of outputs.flatMap((o) => o.outputs)) {
      const what = `${name} (${template ?? 'default'}): ${JSON.stringify(c.text)}`;
      assert.equal(c.finishReason, 'stop', what);
      const read = format.parse(c.text, true, FUNCTIONS);
      assert.equal(read.content, '', what);
      assert.equal(read.calls.length, 1, what);
      assert.equal(callViolation(read.calls[0], FUNCTIONS), null, what);
    }
  }
});

test('a named function: every call is to it', async () => {
  for (const [name, template] of DIALECTS) {
    const format = toolCallFormat(name)!;
    const structuredOutput = { type: 'structural_tag' as const, format: format.callsOnly([FUNCTIONS[0]], false, template) };
    const outputs = await llm.generate(PROMPTS, { temperature: 1, seed: 2, n: 2, maxTokens: 200, structuredOutput });
    for (const c of outputs.flatMap((o) => o.outputs)) {
      const calls = format.parse(c.text, true, FUNCTIONS).calls;
      assert.deepEqual(
        calls.map((call) => [call.name, callViolation(call, FUNCTIONS)]),
        [['get_weather', null]],
        `${name}: ${c.text}`,
      );
    }
  }
});

test('parallel calls: the output is calls only, and every call it completes parses and validates', async () => {
  // The tiny model rarely chooses EOS over another call, so outputs often end at max_tokens: the
  // call being written then is cut, as any output cut by max_tokens is.
  for (const [name, template] of DIALECTS) {
    const format = toolCallFormat(name)!;
    const structuredOutput = { type: 'structural_tag' as const, format: format.callsOnly(FUNCTIONS, true, template) };
    const outputs = await llm.generate([PROMPTS[0]], { temperature: 1, seed: 3, n: 2, maxTokens: 200, structuredOutput });
    for (const c of outputs.flatMap((o) => o.outputs)) {
      const what = `${name} (${template ?? 'default'}): ${JSON.stringify(c.text)}`;
      const read = format.parse(c.text, true, FUNCTIONS);
      assert.ok(read.calls.length >= 1, what);
      const complete = c.finishReason === 'stop' ? read.calls : read.calls.slice(0, -1);
      for (const call of complete) assert.equal(callViolation(call, FUNCTIONS), null, what);
      if (c.finishReason === 'stop') assert.equal(read.content, '', what);
    }
  }
});
