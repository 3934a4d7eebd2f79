import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { CallableFunction } from './call-markup.ts';
import { ParsedOutputStream } from './parsed-output-stream.ts';
import { textWithout } from './parameter-markup.ts';
import { toolCallFormat } from './tool-call-formats.ts';

const FUNCTIONS: CallableFunction[] = [
  { name: 'write_file', parameters: { type: 'object', properties: { path: { type: 'string' }, content: { type: 'string' }, mode: { type: 'integer' } }, required: ['path', 'content'] } },
];
const READ = { onlyName: null, parallel: true, functions: FUNCTIONS };

/** The call's arguments after each piece is pushed. */
function argumentsAfterEach(parser: string, pieces: string[]): string[] {
  const stream = new ParsedOutputStream(toolCallFormat(parser)!, READ);
  let args = '';
  return pieces.map((piece) => {
    for (const call of stream.push(piece).toolCalls) args += call.function.arguments;
    return args;
  });
}

test('a string value streams as it is written, JSON-escaped, holding back what may be its closing tag; other values show once closed', () => {
  assert.deepEqual(
    argumentsAfterEach('qwen3_coder', ['<tool_call>\n<function=write_file>\n<parameter=path>\na.txt\n</parameter>\n<parameter=content>\nline "1"\n', 'line 2</para', 'm>\n</param', 'eter>\n<parameter=mode>\n6', '44\n</parameter>\n</function>\n</tool_call>']),
    ['{"path": "a.txt", "content": "line \\"1\\"', '{"path": "a.txt", "content": "line \\"1\\"\\nline 2', '{"path": "a.txt", "content": "line \\"1\\"\\nline 2</param>', '{"path": "a.txt", "content": "line \\"1\\"\\nline 2</param>"', '{"path": "a.txt", "content": "line \\"1\\"\\nline 2</param>", "mode": 644}'],
  );
  assert.deepEqual(
    argumentsAfterEach('glm45', ['<tool_call>write_file<arg_key>path</arg_key><arg_value> a.txt ', ' </arg_', 'value><arg_key>mode</arg_key><arg_value>6', '44</arg_value></tool_call>']),
    ['{"path": "a.txt', '{"path": "a.txt', '{"path": "a.txt"', '{"path": "a.txt", "mode": 644}'],
  );
});

test('the string-value regex matches exactly the texts without the closing tag', () => {
  const seed = Number(process.env.SEED ?? Date.now() % 100000);
  let state = seed;
  const random = () => ((state = (state * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  for (const tag of ['</parameter>', '</arg_value>']) {
    const whole = new RegExp(`^(?:${textWithout(tag)})$`);
    const alphabet = [...new Set(tag)].concat(['x', '\n']);
    for (let i = 0; i < 3000; i++) {
      let text = '';
      const length = Math.floor(random() * 30);
      // Pieces of the tag make near misses common.
      while (text.length < length) text += random() < 0.2 ? tag.slice(0, 1 + Math.floor(random() * tag.length)) : alphabet[Math.floor(random() * alphabet.length)];
      assert.equal(whole.test(text), !text.includes(tag), `seed ${seed}, ${tag}: ${JSON.stringify(text)}`);
    }
  }
});

test('callsOnly writes the markup its parser reads back: each required parameter in schema order', () => {
  for (const [parser, template] of [['qwen3_coder', null], ['glm45', null], ['glm45', '<arg_key>{{ k }}</arg_key><arg_value>']] as const) {
    const tag = toolCallFormat(parser)!.callsOnly(FUNCTIONS, false, template);
    assert.equal(tag.type, 'tags_with_separator');
    if (tag.type !== 'tags_with_separator') continue;
    const [call] = tag.tags;
    assert.equal(call.content.type, 'sequence');
    if (call.content.type !== 'sequence') continue;
    // The constant parts, with each value filled in as the grammar allows.
    const text = call.begin + call.content.elements.map((e) => (e.type === 'const_string' ? e.value : 'hello')).join('') + call.end;
    const read = toolCallFormat(parser)!.parse(text, true, FUNCTIONS);
    assert.deepEqual([read.content, read.calls.map((c) => [c.name, JSON.parse(c.arguments)])], ['', [['write_file', { path: 'hello', content: 'hello' }]]], `${parser} ${template}: ${text}`);
    assert.equal(text.includes('\n'), template === null, `${parser} ${template}: newlines as the template writes them`);
  }
});
