import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { KeelError } from '../src/errors.ts';
import { LLM } from '../src/engine/llm.ts';
import type { StructuredOutput } from '../src/sampling/structured-output.ts';

// logitBias, allowedTokenIds and badWords through the library API over the default model
// (keel-tiny) on the CPU backend, with async scheduling: a banned token never comes, a forced one
// always does, only allowed ids are drawn, and bad words are never spelled.

const PROMPTS = ['def fibonacci(n):', 'import os\n', 'class Stack:\n'];

let llm: LLM;
before(async () => {
  llm = await LLM.load({ backend: 'cpu', showProgress: false });
});
after(() => llm.close());

/** Every token of every completion of `prompts` under `params`. */
async function tokensOf(params: Parameters<LLM['generate']>[1]): Promise<number[][]> {
  const outputs = await llm.generate(PROMPTS, params);
  return outputs.flatMap((o) => o.outputs.map((c) => c.tokenIds));
}

test('a -100 bias bans the tokens plain decoding draws most, greedy or sampled, with penalties or not', async () => {
  const plain = await tokensOf({ temperature: 0, maxTokens: 24, ignoreEos: true });
  const counts = new Map<number, number>();
  for (const id of plain.flat()) counts.set(id, (counts.get(id) ?? 0) + 1);
  const banned = [...counts.keys()].sort((a, b) => counts.get(b)! - counts.get(a)!).slice(0, 5);
  const logitBias = Object.fromEntries(banned.map((id) => [id, -100]));
  for (const params of [
    { temperature: 0 },
    { temperature: 1, seed: 3, n: 2 },
    { temperature: 0.8, seed: 9, topK: 20, topP: 0.9, frequencyPenalty: 0.5, repetitionPenalty: 1.2 },
  ]) {
    const biased = await tokensOf({ ...params, maxTokens: 24, ignoreEos: true, logitBias });
    for (const tokens of biased) assert.ok(!tokens.some((id) => banned.includes(id)), `${JSON.stringify(params)}: ${tokens} holds a banned token of ${banned}`);
  }
  const greedy = await tokensOf({ temperature: 0, maxTokens: 24, ignoreEos: true, logitBias });
  assert.notDeepEqual(greedy, plain, 'the ban changed the greedy output');
});

test('a +100 bias forces its token at every step, against the penalties too', async () => {
  const [first] = await tokensOf({ temperature: 0, maxTokens: 1 });
  const forced = (first[0] + 1234) % 8192;
  for (const params of [{ temperature: 0 }, { temperature: 1, seed: 4, n: 2 }, { temperature: 1.5, seed: 1, presencePenalty: 2, frequencyPenalty: 2 }]) {
    for (const tokens of await tokensOf({ ...params, maxTokens: 12, ignoreEos: true, logitBias: { [forced]: 100 } })) {
      assert.deepEqual(tokens, new Array<number>(12).fill(forced), JSON.stringify(params));
    }
  }
});

test('allowedTokenIds limits every draw to its tokens, and a bias chooses among them', async () => {
  const allowed = [17, 230, 1999, 4096, 8000];
  for (const params of [{ temperature: 0 }, { temperature: 1, seed: 2, n: 3 }]) {
    for (const tokens of await tokensOf({ ...params, maxTokens: 16, ignoreEos: true, allowedTokenIds: allowed })) {
      assert.ok(tokens.every((id) => allowed.includes(id)), `${JSON.stringify(params)}: ${tokens}`);
    }
  }
  const chosen = await tokensOf({ temperature: 0, maxTokens: 8, ignoreEos: true, allowedTokenIds: allowed, logitBias: { 1999: 100, 5: 100 } });
  for (const tokens of chosen) assert.deepEqual(tokens, new Array<number>(8).fill(1999), 'token 5 is boosted but not allowed');
});

test('allowedTokenIds intersects a structured output\'s grammar: only the choice spelled by allowed tokens is possible', async () => {
  const encode = (text: string) => llm.tokenizer!.encode(text, { addSpecialTokens: false });
  // Single letters too, so that whichever allowed token a draw takes, "banana" can still be finished (and none starts another choice).
  const banana = [...encode('banana'), ...encode('b'), ...encode('a'), ...encode('n')];
  const choice: StructuredOutput = { type: 'choice', choices: ['cherry', 'banana', 'plum'] };
  const outputs = await llm.generate(PROMPTS, { temperature: 1, seed: 6, n: 2, maxTokens: 16, structuredOutput: choice, allowedTokenIds: [...banana, ...llm.modelConfig.eosTokenIds] });
  for (const c of outputs.flatMap((o) => o.outputs)) assert.equal(c.text, 'banana');
  // Allowed tokens that spell no choice leave a draw nothing to take: a clear error, not a token the grammar refuses.
  await assert.rejects(
    llm.generate(PROMPTS.slice(0, 1), { temperature: 0, maxTokens: 16, structuredOutput: choice, allowedTokenIds: encode('z') }),
    (e: unknown) => e instanceof KeelError && /no token can be sampled/.test(e.message),
  );
});

/** Whether `tokens` hold `sequence` somewhere, one token after another. */
function holds(tokens: readonly number[], sequence: readonly number[]): boolean {
  return tokens.some((_, i) => sequence.every((id, j) => tokens[i + j] === id));
}

test('bad words never come in any spelling the tokenizer gives them, greedy or sampled, the pending token counted', async () => {
  const tokenizer = llm.tokenizer!;
  const encode = (text: string) => tokenizer.encode(text, { addSpecialTokens: false });
  const plain = await tokensOf({ temperature: 0, maxTokens: 24, ignoreEos: true });
  // From each greedy output, a word it spells in two tokens as the tokenizer would; from the first, a one-token word too.
  const wordOf = (tokens: number[], length: number) => {
    for (let i = 0; i + length <= tokens.length; i++) {
      const word = tokenizer.decode(tokens.slice(i, i + length), { skipSpecialTokens: true });
      if (word.trim().length > 0 && encode(word).join() === tokens.slice(i, i + length).join()) return word;
    }
    throw new Error(`no ${length}-token word in ${tokens}`);
  };
  const words = [...plain.map((tokens) => wordOf(tokens, 2)), wordOf(plain[0], 1)];
  const spellings = words.flatMap((word) => [encode(word.trimStart()), encode(` ${word.trimStart()}`)]);
  assert.ok(words.every((word, w) => holds(plain[w % plain.length], encode(word))), 'plain decoding spells the words');
  for (const params of [{ temperature: 0 }, { temperature: 1, seed: 8, n: 2 }, { temperature: 0.9, seed: 2, topK: 30, repetitionPenalty: 1.3 }]) {
    const outputs = await tokensOf({ ...params, maxTokens: 24, ignoreEos: true, badWords: words });
    for (const tokens of outputs) {
      const found = spellings.find((sequence) => holds(tokens, sequence));
      assert.equal(found, undefined, `${JSON.stringify(params)}: ${tokens} spells ${found} of ${JSON.stringify(words)}`);
    }
  }
});

test('token ids outside the vocabulary are an invalid argument naming the field', async () => {
  const invalid = (message: RegExp) => (e: unknown) => e instanceof KeelError && e.kind === 'invalid_argument' && message.test(e.message);
  await assert.rejects(llm.generate(['x'], { logitBias: { 8192: 1 } }), invalid(/logitBias key "8192" is outside the vocabulary \(0\.\.8191\)/));
  await assert.rejects(llm.generate(['x'], { allowedTokenIds: [1, 9000] }), invalid(/allowedTokenIds holds 9000/));
});
