import assert from 'node:assert/strict';
import { dirname, join } from 'node:path';
import { after, before, test } from 'node:test';
import { KeelError } from '../src/errors.ts';
import { DEFAULT_MODEL_DIR } from '../src/engine/load-engine.ts';
import { LLM } from '../src/engine/llm.ts';
import type { StructuredOutput } from '../src/sampling/structured-output.ts';
import { PERSON_SCHEMA, schemaViolation } from './helpers/json-schema-check.ts';

// Structured output through the library API over the embedded default model (a code model that
// knows nothing of the schemas) on the CPU backend: the grammar alone makes its output valid.

let llm: LLM;
before(async () => {
  llm = await LLM.load({ backend: 'cpu', showProgress: false, numKvBlocks: 512 });
});
after(() => llm.close());

const DRAFT_DIR = join(dirname(DEFAULT_MODEL_DIR), 'keel-tiny-draft');
const PROMPTS = ['def fibonacci(n):', 'import os\n', 'class Stack:\n', '# sum a list\n'];
const person: StructuredOutput = { type: 'json_schema', schema: PERSON_SCHEMA };
// Room for the longest output the schema allows (its strings and arrays are bounded).
const MAX_TOKENS = 300;

function assertValidPerson(text: string, what: string): void {
  let value: unknown;
  assert.doesNotThrow(() => (value = JSON.parse(text)), `${what}: not JSON: ${text}`);
  assert.equal(schemaViolation(value, PERSON_SCHEMA), null, `${what}: ${text}`);
}

test('json_schema output parses and validates for every sample at temperature 1 (n = 3, four prompts, twice over)', async () => {
  for (const seed of [1, 2]) {
    const outputs = await llm.generate(PROMPTS, { temperature: 1, seed, n: 3, maxTokens: MAX_TOKENS, structuredOutput: person });
    for (const [p, output] of outputs.entries()) {
      for (const c of output.outputs) {
        assert.equal(c.finishReason, 'stop', `seed ${seed} prompt ${p} completion ${c.index} ended by EOS`);
        assertValidPerson(c.text, `seed ${seed} prompt ${p} completion ${c.index}`);
      }
    }
    const distinct = new Set(outputs.flatMap((o) => o.outputs.map((c) => c.text)));
    assert.ok(distinct.size > 6, `the samples differ (${distinct.size} distinct of 12)`);
  }
  assert.equal(llm.stats().numFreeKvBlocks, 512, 'every block returns to the pool');
});

test('regex, choice, grammar and json_object outputs match what they ask for', async () => {
  const cases: [StructuredOutput, (text: string) => boolean][] = [
    [{ type: 'regex', pattern: '[0-9]{3}-[a-z]{2,5}' }, (t) => /^[0-9]{3}-[a-z]{2,5}$/.test(t)],
    [{ type: 'choice', choices: ['yes', 'no', 'maybe so'] }, (t) => ['yes', 'no', 'maybe so'].includes(t)],
    [{ type: 'grammar', grammar: 'root ::= "(" item ("," item){0,3} ")"\nitem ::= [a-c] | [0-9]' }, (t) => /^\((?:[a-c]|[0-9])(?:,(?:[a-c]|[0-9])){0,3}\)$/.test(t)],
    [{ type: 'json_object' }, (t) => {
      const value: unknown = JSON.parse(t);
      return typeof value === 'object' && value !== null && !Array.isArray(value);
    }],
  ];
  for (const [structuredOutput, matches] of cases) {
    const outputs = await llm.generate(PROMPTS, { temperature: 1, seed: 5, n: 2, maxTokens: 120, structuredOutput });
    for (const c of outputs.flatMap((o) => o.outputs)) {
      if (structuredOutput.type === 'json_object' && c.finishReason === 'length') continue;
      assert.equal(c.finishReason, 'stop', `${structuredOutput.type}: ${JSON.stringify(c.text)}`);
      assert.ok(matches(c.text), `${structuredOutput.type}: ${JSON.stringify(c.text)}`);
    }
  }
});

test('in a mixed batch a free request samples what it samples alone, and the constrained ones stay valid', async () => {
  const free = { temperature: 1, seed: 77, maxTokens: 24, ignoreEos: true };
  const [alone] = await llm.generate([PROMPTS[0]], free);
  const runs = await Promise.all([
    llm.generate([PROMPTS[1], PROMPTS[2]], { temperature: 1, seed: 3, maxTokens: MAX_TOKENS, structuredOutput: person }),
    llm.generate([PROMPTS[0]], free),
    llm.generate([PROMPTS[3]], { temperature: 1, seed: 4, maxTokens: 40, structuredOutput: { type: 'choice', choices: ['red', 'green'] } }),
  ]);
  assert.deepEqual(runs[1][0].outputs[0].tokenIds, alone.outputs[0].tokenIds);
  for (const output of runs[0]) assertValidPerson(output.outputs[0].text, 'batched');
  assert.ok(['red', 'green'].includes(runs[2][0].outputs[0].text));
});

test('a seeded constrained request samples the same with and without async scheduling, speculation, or a prefix-cache hit', async () => {
  const params = { temperature: 1, seed: 21, n: 2, maxTokens: MAX_TOKENS, structuredOutput: person };
  const [reference] = await llm.generate([PROMPTS[2]], params);
  const [cached] = await llm.generate([PROMPTS[2]], params);
  assert.deepEqual(cached.outputs.map((c) => c.tokenIds), reference.outputs.map((c) => c.tokenIds), 'prefix-cache hit');
  const variants = [
    { asyncScheduling: false },
    { speculative: { method: 'ngram' as const, numSpeculativeTokens: 4 } },
    { speculative: { model: DRAFT_DIR, numSpeculativeTokens: 3 } },
  ];
  for (const options of variants) {
    const other = await LLM.load({ backend: 'cpu', showProgress: false, numKvBlocks: 512, ...options });
    try {
      const [output] = await other.generate([PROMPTS[2]], params);
      assert.deepEqual(output.outputs.map((c) => c.tokenIds), reference.outputs.map((c) => c.tokenIds), JSON.stringify(options));
      const speculation = other.stats().speculation;
      if (speculation !== null) assert.ok(speculation.numDraftTokens > 0, `${JSON.stringify(options)} drafted`);
    } finally {
      await other.close();
    }
  }
});

test('streamed deltas of a constrained request add up to valid JSON, and a stop string still ends it', async () => {
  let text = '';
  for await (const update of llm.stream(PROMPTS[0], { temperature: 1, seed: 9, maxTokens: MAX_TOKENS, structuredOutput: person })) {
    text += update.deltas.map((d) => d.text).join('');
  }
  assertValidPerson(text, 'streamed');
  const [stopped] = await llm.generate([PROMPTS[0]], { temperature: 1, seed: 9, maxTokens: MAX_TOKENS, structuredOutput: person, stop: ['"age"'] });
  assert.equal(stopped.outputs[0].finishReason, 'stop');
  assert.equal(stopped.outputs[0].stopReason, '"age"');
  assert.ok(text.startsWith(stopped.outputs[0].text), 'the text up to the stop string');
});

test('a bad schema, regex or grammar is an invalid-argument error naming the problem, and nothing is queued', async () => {
  const cases: [StructuredOutput, RegExp][] = [
    [{ type: 'json_schema', schema: { type: 'nope' } }, /the JSON schema is invalid: .*nope/],
    [{ type: 'regex', pattern: '[0-9' }, /the regex is invalid: .*Unclosed '\['/],
    [{ type: 'grammar', grammar: 'root ::= "a" |' }, /the grammar is invalid: EBNF parser error at line 1/],
    [{ type: 'grammar', grammar: 'start ::= "a"' }, /the grammar is invalid: .*root/],
  ];
  for (const [structuredOutput, message] of cases) {
    await assert.rejects(llm.generate([PROMPTS[0]], { structuredOutput }), (error: unknown) => error instanceof KeelError && error.kind === 'invalid_argument' && message.test(error.message));
  }
  await assert.rejects(llm.generate([PROMPTS[0]], { structuredOutput: { type: 'choice', choices: [] } as StructuredOutput }), /structuredOutput is invalid: choice needs a non-empty array/);
  await assert.rejects(llm.generate([PROMPTS[0]], { structuredOutput: person, minTokens: 3 }), /minTokens must be 0 with a structuredOutput/);
  assert.equal(llm.stats().numWaiting + llm.stats().numRunning, 0);
  const [after] = await llm.generate([PROMPTS[0]], { maxTokens: 20, structuredOutput: { type: 'choice', choices: ['alpha', 'beta'] } });
  assert.ok(['alpha', 'beta'].includes(after.outputs[0].text), 'the engine compiles on after refusing bad input');
});
