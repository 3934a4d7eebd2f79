import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { LLM } from '../src/engine/llm.ts';
import type { LoadedEngine } from '../src/engine/load-engine.ts';

// The library API over the embedded default model on the CPU backend.
let llm: LLM;
before(async () => {
  llm = await LLM.load({ backend: 'cpu', showProgress: false, numKvBlocks: 256 });
});
after(() => llm.close());

const PROMPT = 'def fibonacci(n):';
const OTHERS = ['import os\n', 'class Stack:\n', '# sum a list\n'];

test('a seeded request samples the same tokens alone and batched with others', async () => {
  const params = { temperature: 1, seed: 1234, maxTokens: 16, ignoreEos: true };
  const [alone] = await llm.generate([PROMPT], params);
  const batched = await llm.generate([OTHERS[0], PROMPT, OTHERS[1]], { ...params, seed: 1234 });
  assert.deepEqual(batched[1].outputs[0].tokenIds, alone.outputs[0].tokenIds);
});

test('a seeded request samples the same tokens whether its prompt runs in one step or in chunks', async () => {
  const params = { temperature: 1, seed: 99, maxTokens: 16, ignoreEos: true };
  const [whole] = await llm.generate([PROMPT], params);
  const chunked = await LLM.load({ backend: 'cpu', showProgress: false, numKvBlocks: 256, maxNumBatchedTokens: 2 });
  try {
    const [inChunks] = await chunked.generate([PROMPT], params);
    assert.deepEqual(inChunks.outputs[0].tokenIds, whole.outputs[0].tokenIds);
  } finally {
    await chunked.close();
  }
});

test('n = 2 gives two completions, each reproducible from the seed', async () => {
  const params = { n: 2, temperature: 1, seed: 7, maxTokens: 12, ignoreEos: true };
  const [first] = await llm.generate([PROMPT], params);
  const [second] = await llm.generate([PROMPT], params);
  assert.equal(first.outputs.length, 2);
  assert.notDeepEqual(first.outputs[0].tokenIds, first.outputs[1].tokenIds, 'completions draw from their own streams');
  assert.deepEqual(second.outputs.map((o) => o.tokenIds), first.outputs.map((o) => o.tokenIds));
  assert.equal(llm.stats().numFreeKvBlocks, 256, 'forked blocks all return to the pool');
});

test('aborting a stream mid-way ends it and frees its blocks at once', async () => {
  const controller = new AbortController();
  let updates = 0;
  for await (const update of llm.stream(PROMPT, { maxTokens: 500, ignoreEos: true, temperature: 0 }, { signal: controller.signal })) {
    if (++updates === 3) controller.abort();
    if (update.finished) assert.equal(update.output.outputs[0].finishReason, 'abort');
  }
  assert.ok(updates < 500);
  const stats = llm.stats();
  assert.equal(stats.numFreeKvBlocks, stats.numKvBlocks);
  assert.equal(stats.numRunning + stats.numWaiting, 0);
});

test('breaking out of a stream aborts its request', async () => {
  for await (const _ of llm.stream(PROMPT, { maxTokens: 500, ignoreEos: true })) break;
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(llm.stats().numFreeKvBlocks, llm.stats().numKvBlocks);
});

test('a stop string ends the completion before it; a stop token id ends it too', async () => {
  const greedy = { temperature: 0, maxTokens: 32, ignoreEos: true };
  const [full] = await llm.generate([PROMPT], greedy);
  const text = full.outputs[0].text;
  const stop = text.slice(8, 14);
  const [stopped] = await llm.generate([PROMPT], { ...greedy, stop: [stop] });
  assert.equal(stopped.outputs[0].text, text.slice(0, text.indexOf(stop)));
  assert.equal(stopped.outputs[0].finishReason, 'stop');
  assert.equal(stopped.outputs[0].stopReason, stop);

  const stopId = full.outputs[0].tokenIds[5];
  const [byToken] = await llm.generate([PROMPT], { ...greedy, stopTokenIds: [stopId] });
  const firstAt = full.outputs[0].tokenIds.indexOf(stopId);
  assert.deepEqual(byToken.outputs[0].tokenIds, full.outputs[0].tokenIds.slice(0, firstAt + 1));
  assert.equal(byToken.outputs[0].stopReason, stopId);
});

test('logprobs: the sampled token and the top alternatives, most likely first', async () => {
  const [out] = await llm.generate([PROMPT], { temperature: 0, maxTokens: 4, logprobs: 3 });
  const logprobs = out.outputs[0].logprobs;
  assert.ok(logprobs && logprobs.length === 4);
  logprobs.forEach((position, i) => {
    assert.equal(position.top.length, 3);
    assert.equal(position.sampled.tokenId, out.outputs[0].tokenIds[i]);
    // Greedy picks the most likely token of the raw distribution.
    assert.equal(position.top[0].tokenId, position.sampled.tokenId);
    assert.ok(position.top[0].logprob >= position.top[1].logprob && position.top[1].logprob >= position.top[2].logprob);
    assert.ok(position.sampled.logprob <= 0);
  });
});

test('maxTokens ends with "length"; invalid parameters and prompts are refused before anything runs', async () => {
  const [out] = await llm.generate([PROMPT], { temperature: 0, maxTokens: 3, ignoreEos: true });
  assert.equal(out.outputs[0].finishReason, 'length');
  assert.equal(out.outputs[0].tokenIds.length, 3);
  await assert.rejects(llm.generate([PROMPT], { topP: 0 }), /topP/);
  await assert.rejects(llm.generate([[1, 2, 99_999]], {}), /outside the vocabulary/);
  await assert.rejects(llm.generate([PROMPT], { maxTokens: 5000 }), /maximum context length/);
  assert.equal(llm.stats().numFreeKvBlocks, llm.stats().numKvBlocks);
});

test('logprobs: the drawn token\'s, and as many alternatives as asked, most likely first', async () => {
  const params = { temperature: 0, maxTokens: 8, ignoreEos: true };
  const [bare] = await llm.generate([PROMPT], { ...params, logprobs: 0 });
  const [top3] = await llm.generate([PROMPT], { ...params, logprobs: 3 });
  assert.deepEqual(bare.outputs[0].tokenIds, top3.outputs[0].tokenIds);
  top3.outputs[0].logprobs!.forEach((position, i) => {
    const sampled = bare.outputs[0].logprobs![i].sampled;
    assert.equal(bare.outputs[0].logprobs![i].top.length, 0);
    assert.deepEqual(position.sampled, sampled);
    assert.equal(position.top.length, 3);
    // Greedy: the drawn token is the most likely one.
    assert.equal(position.top[0].tokenId, sampled.tokenId);
    assert.equal(position.top[0].logprob, sampled.logprob);
    for (let k = 1; k < 3; k++) assert.ok(position.top[k].logprob <= position.top[k - 1].logprob);
    assert.ok(position.top.reduce((p, t) => p + Math.exp(t.logprob), 0) <= 1 + 1e-6);
  });
});

test('a step that fails rejects every request in flight with its error, frees their blocks, and the engine goes on', async () => {
  const failing = await LLM.load({ backend: 'cpu', showProgress: false, numKvBlocks: 64 });
  try {
    // The engine's backend, reached past LLM's privacy: its third sampling pass fails.
    const backend = (failing as unknown as { loaded: LoadedEngine }).loaded.backend;
    const sampleRows = backend.sampleRows.bind(backend);
    let passes = 0;
    backend.sampleRows = (x, draws) => {
      if (++passes === 3) throw new Error('device lost');
      return sampleRows(x, draws);
    };
    const params = { temperature: 0, maxTokens: 8, ignoreEos: true };
    await assert.rejects(failing.generate([PROMPT, OTHERS[0]], params), /device lost/);
    assert.equal(failing.stats().numFreeKvBlocks, failing.stats().numKvBlocks);
    const [again] = await failing.generate([PROMPT], params);
    assert.equal(again.outputs[0].tokenIds.length, 8);
  } finally {
    await failing.close();
  }
});

test('the KV pool sized from memory is capped at what max-num-seqs sequences of max-model-len tokens can use', async () => {
  // A terabyte of budget would be 2^40 / 65,536 bytes per block: 16.8 million blocks of the default model on the CPU.
  const capped = await LLM.load({ backend: 'cpu', showProgress: false, cpuKvCacheBytes: 2 ** 40, maxNumSeqs: 3, maxModelLen: 100 });
  try {
    assert.equal(capped.stats().numKvBlocks, 3 * Math.ceil(100 / 16));
  } finally {
    await capped.close();
  }
});

test('prompt logprobs score each prompt token as generation logprobs score the same tokens, in any chunking, with no prefix-cache hit', async () => {
  const greedy = { temperature: 0, maxTokens: 12, ignoreEos: true, logprobs: 3 };
  const [generated] = await llm.generate([PROMPT], greedy);
  const continuation = generated.outputs[0];
  const prompt = [...generated.promptTokenIds, ...continuation.tokenIds];
  const scoreWith = async (engine: LLM) => (await engine.generate([prompt], { temperature: 0, maxTokens: 1, promptLogprobs: 3 }))[0];
  const whole = await scoreWith(llm);
  const scores = whole.promptLogprobs;
  assert.ok(scores);
  assert.equal(scores.length, prompt.length);
  assert.equal(scores[0], null, 'the first token has no context');
  assert.ok(scores.slice(1).every((s, i) => s !== null && s.sampled.tokenId === prompt[i + 1]));
  // The generated tokens' own logprobs, computed one decode step at a time.
  continuation.logprobs!.forEach((lp, i) => {
    const scored = scores[generated.promptTokenIds.length + i]!;
    assert.ok(Math.abs(scored.sampled.logprob - lp.sampled.logprob) < 1e-4, `token ${i}: ${scored.sampled.logprob} vs ${lp.sampled.logprob}`);
    assert.deepEqual(scored.top.map((t) => t.tokenId), lp.top.map((t) => t.tokenId));
  });
  const again = await scoreWith(llm);
  assert.equal(again.metrics.numCachedTokens, 0, 'scored prompts take no prefix-cache hits');
  assert.deepEqual(again.promptLogprobs, scores);
  const chunked = await LLM.load({ backend: 'cpu', showProgress: false, numKvBlocks: 256, maxNumBatchedTokens: 5 });
  try {
    const inChunks = (await scoreWith(chunked)).promptLogprobs!;
    inChunks.forEach((s, i) => assert.ok(i === 0 ? s === null : Math.abs(s!.sampled.logprob - scores[i]!.sampled.logprob) < 1e-5, `position ${i}`));
  } finally {
    await chunked.close();
  }
});
