import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createOpenAI } from '@ai-sdk/openai';
import { generateObject, generateText, stepCountIs, streamObject, streamText, tool } from 'ai';
import { z } from 'zod';
import { hermesChatModelDir } from './hermes-chat-model.ts';
import { scriptMarker } from './scripted-engine-thread.ts';
import { startTinyServer, type TinyServer } from './tiny-server.ts';

// The Vercel AI SDK (`ai` + `@ai-sdk/openai`) with its defaults against a Keel server: its OpenAI
// provider sends `openai(model)` to /v1/responses, `openai.chat(model)` to /v1/chat/completions.
// The real engine over the embedded default model (a code model, at temperature 1) answers
// everything whose shape the server guarantees: text, objects under a schema (text.format /
// response_format json_schema) and forced tool calls (toolChoice required or a tool, constrained
// to the Hermes parser's markup). A model choosing by itself to call a tool (toolChoice auto) is
// what a tiny random model never does: that one test runs on the scripted engine thread, which
// swaps the sampled tokens for a scripted reply (scripted-engine-thread.ts).

let server: TinyServer;
let openai: ReturnType<typeof createOpenAI>;

before(async () => {
  server = await startTinyServer({ server: { servedModelName: 'tiny', toolCallParser: 'hermes' }, defaultModel: true, engine: { numKvBlocks: 512 } });
  openai = createOpenAI({ baseURL: `${server.url}/v1`, apiKey: 'not-checked' });
});
after(() => server.close());

const PERSON = z.object({ name: z.string().max(20), age: z.number().int().min(0).max(120), tags: z.array(z.string().max(10)).max(3) });
const WEATHER_INPUT = z.object({ city: z.string().max(16), unit: z.enum(['celsius', 'fahrenheit']) });
const WEATHER = tool({
  description: 'The weather in a city',
  inputSchema: WEATHER_INPUT,
  execute: async ({ city, unit }) => ({ city, temperature: unit === 'celsius' ? 21 : 70 }),
});

test('generateText and streamText, on /v1/responses (the default) and /v1/chat/completions', async () => {
  for (const model of [openai('tiny'), openai.chat('tiny')]) {
    const whole = await generateText({ model, prompt: 'def add(a, b):', maxOutputTokens: 12, temperature: 1 });
    assert.equal(whole.usage.outputTokens, 12, model.provider);
    assert.equal(whole.finishReason, 'length');
    assert.ok(whole.text.length > 0);
    const streamed = streamText({ model, prompt: 'def add(a, b):', maxOutputTokens: 12, temperature: 1 });
    let text = '';
    for await (const delta of streamed.textStream) text += delta;
    assert.equal(text, await streamed.text);
    assert.equal((await streamed.usage).outputTokens, 12, model.provider);
  }
});

test('generateObject and streamObject: every object at temperature 1 is valid under the zod schema', async () => {
  for (const model of [openai('tiny'), openai.chat('tiny')]) {
    for (const seed of [1, 2, 3]) {
      // The SDK validates the object with the schema, and throws when it does not.
      const { object, finishReason } = await generateObject({ model, schema: PERSON, prompt: 'A person', maxOutputTokens: 300, temperature: 1, seed });
      assert.equal(finishReason, 'stop');
      assert.deepEqual(PERSON.parse(object), object);
    }
    const streamed = streamObject({ model, schema: PERSON, prompt: 'A person', maxOutputTokens: 300, temperature: 1, seed: 4 });
    let partials = 0;
    for await (const partial of streamed.partialObjectStream) partials += partial === undefined ? 0 : 1;
    const object = await streamed.object;
    assert.deepEqual(PERSON.parse(object), object);
    assert.ok(partials > 1, `the object grew as it streamed (${partials} partials)`);
  }
});

test('streamText with tools (required, then a named tool): calls validate, run, and their results go back for the next step', async () => {
  for (const model of [openai('tiny'), openai.chat('tiny')]) {
    const result = streamText({
      model,
      prompt: 'What is the weather in Paris?',
      tools: { weather: WEATHER },
      toolChoice: 'required',
      maxOutputTokens: 200,
      temperature: 1,
      stopWhen: stepCountIs(2),
      providerOptions: { openai: { parallelToolCalls: false } },
    });
    const inputDeltas: string[] = [];
    for await (const part of result.fullStream) if (part.type === 'tool-input-delta') inputDeltas.push(part.delta);
    const steps = await result.steps;
    assert.equal(steps.length, 2, model.provider);
    for (const step of steps) {
      assert.equal(step.finishReason, 'tool-calls');
      assert.equal(step.toolCalls.length, 1);
      assert.equal(step.toolResults.length, 1, 'the SDK ran the tool: its input validated');
    }
    assert.ok(inputDeltas.length > 2, `the arguments streamed in pieces (${inputDeltas.length})`);
    // The second step's request carried the first step's call and result.
    const second = JSON.stringify(steps[1].request.body);
    assert.ok(second.includes(steps[0].toolCalls[0].toolCallId), second);
  }
  const named = await generateText({ model: openai('tiny'), prompt: 'Weather?', tools: { weather: WEATHER }, toolChoice: { type: 'tool', toolName: 'weather' }, maxOutputTokens: 200, temperature: 1, providerOptions: { openai: { parallelToolCalls: false } } });
  assert.deepEqual(
    named.toolCalls.map((c) => c.toolName),
    ['weather'],
  );
});

test('streamText with tools left to the model (auto), on the scripted engine: the call runs and the answer comes next', async () => {
  const model = hermesChatModelDir();
  const scripted = await startTinyServer({ modelDir: model.dir, engineEntry: new URL('./scripted-engine-thread.ts', import.meta.url), server: { servedModelName: 'hermes-tiny' } });
  try {
    const provider = createOpenAI({ baseURL: `${scripted.url}/v1`, apiKey: 'not-checked' });
    // The tool's result holds the reply the scripted model gives once it has read it.
    const weather = tool({ description: 'The weather in a city', inputSchema: WEATHER_INPUT, execute: async ({ city }) => scriptMarker(`It is 21 °C in ${city}.`) });
    const call = `<tool_call>\n${JSON.stringify({ name: 'weather', arguments: { city: 'Paris', unit: 'celsius' } })}\n</tool_call>`;
    for (const chat of [false, true]) {
      const result = streamText({
        model: chat ? provider.chat('hermes-tiny') : provider('hermes-tiny'),
        prompt: `What is the weather in Paris? ${scriptMarker(call)}`,
        tools: { weather },
        maxOutputTokens: 300,
        stopWhen: stepCountIs(3),
      });
      for await (const part of result.fullStream) assert.notEqual(part.type, 'error', JSON.stringify(part));
      const steps = await result.steps;
      assert.deepEqual(steps[0].toolCalls.map((c) => [c.toolName, c.input]), [['weather', { city: 'Paris', unit: 'celsius' }]]);
      assert.equal(await result.text, 'It is 21 °C in Paris.');
      assert.equal(await result.finishReason, 'stop');
    }
  } finally {
    await scripted.close();
    model.remove();
  }
});
