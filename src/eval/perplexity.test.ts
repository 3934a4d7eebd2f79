import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { LLM } from '../engine/llm.ts';
import { perplexity } from './perplexity.ts';

let llm: LLM;
before(async () => {
  llm = await LLM.load({ backend: 'cpu', showProgress: false, numKvBlocks: 128 });
});
after(() => llm.close());

const TEXT = 'def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n';

test('one window: the exponent of the mean negative prompt logprob of every token but the first', async () => {
  const tokens = llm.encode(TEXT);
  const [scored] = await llm.generate([tokens], { temperature: 0, maxTokens: 1, promptLogprobs: 0 });
  const nll = scored.promptLogprobs!.slice(1).map((lp) => -lp!.sampled.logprob);
  const expected = Math.exp(nll.reduce((a, b) => a + b, 0) / nll.length);
  const result = await perplexity(llm, tokens, { contextLength: tokens.length, stride: tokens.length });
  assert.equal(result.numWindows, 1);
  assert.equal(result.numScoredTokens, tokens.length - 1);
  assert.ok(Math.abs(result.perplexity - expected) < 1e-9 * expected, `${result.perplexity} vs ${expected}`);
  assert.ok(result.perplexity > 1 && Number.isFinite(result.perplexity));
});

test('overlapping windows score every token but the first once; disjoint ones skip each window\'s first; context helps', async () => {
  const tokens = llm.encode(TEXT.repeat(3));
  const whole = await perplexity(llm, tokens, { contextLength: tokens.length, stride: tokens.length });
  const disjoint = await perplexity(llm, tokens, { contextLength: 16, stride: 16 });
  const overlapping = await perplexity(llm, tokens, { contextLength: 16, stride: 4 });
  assert.equal(overlapping.numScoredTokens, tokens.length - 1);
  assert.equal(disjoint.numWindows, Math.ceil(tokens.length / 16));
  assert.equal(disjoint.numScoredTokens, tokens.length - disjoint.numWindows);
  assert.equal(overlapping.numWindows, Math.ceil((tokens.length - 16) / 4) + 1);
  // Windows that overlap give each token at least 12 tokens of context; disjoint ones as few as 1.
  assert.ok(overlapping.perplexity < disjoint.perplexity, `${overlapping.perplexity} vs ${disjoint.perplexity}`);
  assert.ok(whole.perplexity <= overlapping.perplexity * 1.05, `${whole.perplexity} vs ${overlapping.perplexity}`);
});

test('bad window settings are refused with the setting named', async () => {
  const tokens = llm.encode(TEXT);
  await assert.rejects(perplexity(llm, tokens, { contextLength: 1, stride: 1 }), /context length must be an integer of at least 2/);
  await assert.rejects(perplexity(llm, tokens, { contextLength: 8, stride: 9 }), /stride must be an integer in \[1, context length 8\]/);
  await assert.rejects(perplexity(llm, [5], { contextLength: 8, stride: 8 }), /at least 2 tokens/);
});
