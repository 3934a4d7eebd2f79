import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { CallableFunction } from './call-markup.ts';
import { ParsedOutputStream, type CallFilter, type ParsedMessage } from './parsed-output-stream.ts';
import { formatOfTemplate, toolCallFormat, TOOL_CALL_PARSERS } from './tool-call-formats.ts';

// Model outputs written as each family writes them (the texts come from the formats' documentation
// and chat templates, not from a model run here), with what they must read as.

interface Case {
  parser: string;
  text: string;
  content: string | null;
  reasoning?: string;
  calls: [string, unknown][];
}

const WEATHER = { city: 'Paris', unit: 'celsius' };
const NESTED = { query: { text: 'a "quoted" } brace', tags: ['x', 'y'] }, limit: 3 };

// The functions offered: formats that write values as bare text read them by these schemas.
const FUNCTIONS: CallableFunction[] = [
  { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' }, unit: { enum: ['celsius', 'fahrenheit'] } }, required: ['city'] } },
  { name: 'search', parameters: { type: 'object', properties: { query: { type: 'object' }, limit: { type: 'integer' } } } },
  { name: 'run_code', parameters: { type: 'object', properties: { code: { type: 'string' }, timeout: { type: 'number' }, label: { type: ['string', 'null'] } } } },
  { name: 'get_time', parameters: { type: 'object', properties: {} } },
];
const CODE = 'def f(a, b):\n    return "</param" if a < b else {"x": 1}\n';

const GLM_TWO_CALLS =
  'Let me check both.\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n<arg_key>unit</arg_key>\n<arg_value>celsius</arg_value>\n</tool_call>\n' +
  '<tool_call>search\n<arg_key>query</arg_key>\n<arg_value>{"text": "a \\"quoted\\" } brace", "tags": ["x", "y"]}</arg_value>\n<arg_key>limit</arg_key>\n<arg_value>3</arg_value>\n</tool_call>';
const QWEN_TWO_CALLS =
  'Let me check both.\n\n<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n<parameter=unit>\ncelsius\n</parameter>\n</function>\n</tool_call>\n' +
  '<tool_call>\n<function=search>\n<parameter=query>\n{"text": "a \\"quoted\\" } brace", "tags": ["x", "y"]}\n</parameter>\n<parameter=limit>\n3\n</parameter>\n</function>\n</tool_call>';

const CASES: Case[] = [
  { parser: 'hermes', text: 'The weather is fine.', content: 'The weather is fine.', calls: [] },
  { parser: 'hermes', text: '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>', content: null, calls: [['get_weather', WEATHER]] },
  {
    parser: 'hermes',
    text: 'Let me check both.\n\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>\n<tool_call>\n{"name": "search", "arguments": {"query": {"text": "a \\"quoted\\" } brace", "tags": ["x", "y"]}, "limit": 3}}\n</tool_call>',
    content: 'Let me check both.',
    calls: [['get_weather', WEATHER], ['search', NESTED]],
  },
  // Arguments some models write JSON-encoded, as a string.
  { parser: 'hermes', text: '<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\", \\"unit\\": \\"celsius\\"}"}</tool_call>', content: null, calls: [['get_weather', WEATHER]] },
  // Not a call: the marker and what follows stay content.
  { parser: 'hermes', text: 'Use <tool_call> tags like this: <tool_call>not json</tool_call>', content: 'Use <tool_call> tags like this: <tool_call>not json</tool_call>', calls: [] },
  { parser: 'hermes', text: 'a < b and <tool_ is a prefix', content: 'a < b and <tool_ is a prefix', calls: [] },
  { parser: 'llama3_json', text: '{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}', content: null, calls: [['get_weather', WEATHER]] },
  { parser: 'llama3_json', text: '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}; {"name": "search", "parameters": {"query": {"text": "a \\"quoted\\" } brace", "tags": ["x", "y"]}, "limit": 3}}', content: null, calls: [['get_weather', WEATHER], ['search', NESTED]] },
  { parser: 'llama3_json', text: '{"answer": 42, "name": 7}', content: '{"answer": 42, "name": 7}', calls: [] },
  { parser: 'llama3_json', text: 'It is sunny in {city}.', content: 'It is sunny in {city}.', calls: [] },
  { parser: 'mistral', text: '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}, {"name": "search", "arguments": {"query": {"text": "a \\"quoted\\" } brace", "tags": ["x", "y"]}, "limit": 3}}]', content: null, calls: [['get_weather', WEATHER], ['search', NESTED]] },
  { parser: 'mistral', text: 'Sure.[TOOL_CALLS]get_weather[ARGS]{"city": "Paris", "unit": "celsius"}[TOOL_CALLS]search[ARGS]{"query": {"text": "a \\"quoted\\" } brace", "tags": ["x", "y"]}, "limit": 3}', content: 'Sure.', calls: [['get_weather', WEATHER], ['search', NESTED]] },
  { parser: 'mistral', text: '[TOOL_CALLS]get_weather[CALL_ID]a1b2c3d4e[ARGS]{"city": "Paris", "unit": "celsius"}', content: null, calls: [['get_weather', WEATHER]] },
  { parser: 'mistral', text: 'No tools needed [TOOL_CALLS is not a marker].', content: 'No tools needed [TOOL_CALLS is not a marker].', calls: [] },
  {
    parser: 'deepseek',
    text: 'Checking.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{"city": "Paris", "unit": "celsius"}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>search\n```json\n{"query": {"text": "a \\"quoted\\" } brace", "tags": ["x", "y"]}, "limit": 3}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>',
    content: 'Checking.',
    calls: [['get_weather', WEATHER], ['search', NESTED]],
  },
  { parser: 'deepseek', text: '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{"city": "Paris", "unit": "celsius"}<｜tool▁call▁end｜><｜tool▁calls▁end｜>', content: null, calls: [['get_weather', WEATHER]] },
  {
    parser: 'harmony',
    text: '<|channel|>analysis<|message|>The user wants the weather.<|end|><|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris", "unit": "celsius"}',
    content: null,
    reasoning: 'The user wants the weather.',
    calls: [['get_weather', WEATHER]],
  },
  { parser: 'harmony', text: '<|channel|>analysis<|message|>Simple.<|end|><|start|>assistant<|channel|>final<|message|>It is sunny in Paris.', content: 'It is sunny in Paris.', reasoning: 'Simple.', calls: [] },
  { parser: 'harmony', text: '<|start|>assistant to=functions.search<|channel|>commentary json<|message|>{"query": {"text": "a \\"quoted\\" } brace", "tags": ["x", "y"]}, "limit": 3}<|call|>', content: null, calls: [['search', NESTED]] },
  // GLM-4.5 / 4.6 (newlines) and 4.7 (none): string parameters are the text, others JSON.
  { parser: 'glm45', text: GLM_TWO_CALLS, content: 'Let me check both.', calls: [['get_weather', WEATHER], ['search', NESTED]] },
  { parser: 'glm45', text: '<tool_call>get_weather<arg_key>city</arg_key><arg_value>Zürich 🌧</arg_value></tool_call>Done.', content: 'Done.', calls: [['get_weather', { city: 'Zürich 🌧' }]] },
  {
    parser: 'glm45',
    text: `<tool_call>run_code<arg_key>code</arg_key><arg_value>${CODE}</arg_value><arg_key>label</arg_key><arg_value>42</arg_value><arg_key>timeout</arg_key><arg_value>soon</arg_value><arg_key>extra</arg_key><arg_value>[1, 2]</arg_value></tool_call>`,
    content: null,
    calls: [['run_code', { code: CODE.trim(), label: '42', timeout: 'soon', extra: [1, 2] }]],
  },
  { parser: 'glm45', text: '<tool_call>get_time</tool_call><tool_call>get_time\n</tool_call>', content: null, calls: [['get_time', {}], ['get_time', {}]] },
  // Not calls: the marker stays content.
  { parser: 'glm45', text: 'Write <tool_call> then the name; <tool_call>get weather</tool_call> has a space.', content: 'Write <tool_call> then the name; <tool_call>get weather</tool_call> has a space.', calls: [] },
  // Markup the format does not know ends the call there; the rest is content.
  { parser: 'glm45', text: '<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value>oops</tool_call>', content: 'oops</tool_call>', calls: [['get_weather', { city: 'Paris' }]] },
  { parser: 'qwen3_coder', text: QWEN_TWO_CALLS, content: 'Let me check both.', calls: [['get_weather', WEATHER], ['search', NESTED]] },
  {
    parser: 'qwen3_coder',
    text: `<tool_call>\n<function=run_code>\n<parameter=code>\n${CODE}\n</parameter>\n<parameter=timeout>\n2.5\n</parameter>\n<parameter=label>\n42\n</parameter>\n</function>\n</tool_call>`,
    content: null,
    calls: [['run_code', { code: CODE, timeout: 2.5, label: '42' }]],
  },
  { parser: 'qwen3_coder', text: '<tool_call>\n<function=get_weather>\n<parameter=city>\nZürich 🌧\n</parameter>\n</function>\n</tool_call>\nAnything else?', content: 'Anything else?', calls: [['get_weather', { city: 'Zürich 🌧' }]] },
  { parser: 'qwen3_coder', text: '<tool_call>\n<function=get_time>\n</function>\n</tool_call>', content: null, calls: [['get_time', {}]] },
  { parser: 'qwen3_coder', text: 'Use <tool_call> and <function=name> as text.', content: 'Use <tool_call> and <function=name> as text.', calls: [] },
  // A call that leaves the format, and one without its closing `</tool_call>`.
  { parser: 'qwen3_coder', text: '<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\nI changed my mind.', content: 'I changed my mind.', calls: [['get_weather', { city: 'Paris' }]] },
  { parser: 'qwen3_coder', text: '<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>', content: null, calls: [['get_weather', { city: 'Paris' }]] },
];

const ALL: CallFilter = { onlyName: null, parallel: true, functions: FUNCTIONS };

function format(parser: string) {
  const found = toolCallFormat(parser);
  assert.ok(found, parser);
  return found;
}

function check(c: Case, message: ParsedMessage, how: string): void {
  const label = `${c.parser} ${how}: ${JSON.stringify(c.text)}`;
  assert.equal(message.content, c.content, label);
  assert.equal(message.reasoning, c.reasoning ?? null, label);
  assert.deepEqual(
    message.toolCalls.map((call) => [call.function.name, JSON.parse(call.function.arguments)]),
    c.calls,
    label,
  );
}

test('every parser reads its family\'s calls, content and reasoning from a whole output', () => {
  for (const c of CASES) check(c, ParsedOutputStream.read(format(c.parser), ALL, c.text), 'whole');
});

test('streamed in pieces of any size, the deltas add up to the whole output\'s reading and never show markup as content', () => {
  const seed = Number(process.env.SEED ?? Date.now() % 100000);
  let state = seed;
  const random = () => ((state = (state * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  for (const c of CASES) {
    const splits = [[...c.text].map((ch) => ch), [c.text]];
    for (let r = 0; r < 20; r++) {
      const pieces: string[] = [];
      for (let at = 0; at < c.text.length; ) {
        const size = 1 + Math.floor(random() * 12);
        pieces.push(c.text.slice(at, at + size));
        at += size;
      }
      splits.push(pieces);
    }
    for (const pieces of splits) {
      const stream = new ParsedOutputStream(format(c.parser), ALL);
      let content = '';
      let reasoning = '';
      const calls: { id: string; name: string; arguments: string }[] = [];
      for (const delta of [...pieces.map((p) => stream.push(p)), stream.finish()]) {
        content += delta.content;
        reasoning += delta.reasoning;
        for (const call of delta.toolCalls) {
          if (call.id !== undefined) {
            assert.equal(call.index, calls.length, 'a call is announced once, in order');
            calls.push({ id: call.id, name: call.function.name ?? '', arguments: '' });
          }
          calls[call.index].arguments += call.function.arguments;
        }
      }
      const label = `seed ${seed}, ${JSON.stringify(pieces)}`;
      const whole = stream.message();
      assert.equal(content, whole.content ?? '', label);
      assert.equal(reasoning, whole.reasoning ?? '', label);
      assert.deepEqual(
        calls,
        whole.toolCalls.map((t) => ({ id: t.id, name: t.function.name, arguments: t.function.arguments })),
        label,
      );
      check(c, whole, label);
    }
  }
});

test('a call cut off by max_tokens keeps what it had; text that only might be markup is held, then shown', () => {
  const stream = new ParsedOutputStream(format('hermes'), ALL);
  assert.deepEqual(stream.push('Hello <tool'), { content: 'Hello', reasoning: '', toolCalls: [] });
  assert.deepEqual(stream.push('box> there'), { content: ' <toolbox> there', reasoning: '', toolCalls: [] });
  const cut = new ParsedOutputStream(format('hermes'), ALL);
  const deltas = [cut.push('<tool_call>{"name": "f", "arguments": {"a": [1, 2'), cut.finish()];
  assert.equal(deltas[0].toolCalls[0].function.name, 'f');
  assert.equal(deltas.flatMap((d) => d.toolCalls.map((t) => t.function.arguments)).join(''), '{"a": [1, 2');
});

test('tool_choice naming a function keeps its calls only; parallel_tool_calls false keeps the first', () => {
  const text = CASES[2].text;
  const named = ParsedOutputStream.read(format('hermes'), { onlyName: 'search', parallel: true, functions: FUNCTIONS }, text);
  assert.deepEqual(
    named.toolCalls.map((t) => t.function.name),
    ['search'],
  );
  const first = ParsedOutputStream.read(format('hermes'), { onlyName: null, parallel: false, functions: FUNCTIONS }, text);
  assert.deepEqual(
    first.toolCalls.map((t) => t.function.name),
    ['get_weather'],
  );
});

test('call ids: call_ and 24 hex digits, and 9 alphanumerics for Mistral, whose templates check them', () => {
  const [hermes] = ParsedOutputStream.read(format('hermes'), ALL, CASES[1].text).toolCalls;
  assert.match(hermes.id, /^call_[0-9a-f]{24}$/);
  const [mistral] = ParsedOutputStream.read(format('mistral'), ALL, CASES[12].text).toolCalls;
  assert.match(mistral.id, /^[A-Za-z0-9]{9}$/);
});

test('the parser is picked from the chat template by the markup it teaches the model', () => {
  const templates: [string, string | null][] = [
    ["{%- for tool in tools %}{{ tool | tojson }}{% endfor %}<tool_call>\\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\\n</tool_call>", 'hermes'],
    ["{{ '[AVAILABLE_TOOLS]' }}{{ tools | tojson }}{{ '[/AVAILABLE_TOOLS]' }}{% if message.tool_calls %}{{ '[TOOL_CALLS]' }}{% endif %}", 'mistral'],
    ["{{- '<|python_tag|>' + tool_call.name }}{{- 'Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.' }}", 'llama3_json'],
    ["{{- '<|start|>assistant<|channel|>commentary to=functions.' + tool.name }}", 'harmony'],
    ["{{'<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] }}", 'deepseek'],
    ["{% for k, v in _args.items() %}<arg_key>{{ k }}</arg_key><arg_value>{{ v | tojson(ensure_ascii=False) if v is not string else v }}</arg_value>{% endfor %}<tool_call>", 'glm45'],
    ["{{- '<tool_call>\\n<function=' + tool_call.name + '>\\n' }}{{- '<parameter=' + args_name + '>\\n' }}", 'qwen3_coder'],
    ["{% for m in messages %}{{ m.content }}{% endfor %}", null],
  ];
  for (const [template, expected] of templates) assert.equal(formatOfTemplate(template)?.name ?? null, expected, template);
  assert.deepEqual([...TOOL_CALL_PARSERS].sort(), ['deepseek', 'glm45', 'harmony', 'hermes', 'llama3_json', 'mistral', 'qwen3_coder']);
});
