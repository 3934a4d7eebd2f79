import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { EngineOptions } from '../src/config.ts';
import { LLM } from '../src/engine/llm.ts';
import { loadEngine } from '../src/engine/load-engine.ts';
import type { RequestOutput } from '../src/engine/outputs.ts';
import { forkStream } from '../src/sampling/rng.ts';
import { resolveSamplingParams } from '../src/sampling/validate.ts';
import { converse, generated, randomTokens } from './helpers/conversations.ts';
import { crowd } from './helpers/crowd.ts';

// The prefix cache's host tier (--kv-offload-gb, docs/long-context.md) end to end on the CPU
// backend with keel-tiny: multi-turn conversations whose history outgrows a small pool give the
// same tokens with the tier, without it and without caching, and the tier serves their prefixes.

const GREEDY = { temperature: 0, ignoreEos: true } as const;
const BASE = { backend: 'cpu', showProgress: false, blockSize: 8, maxNumBatchedTokens: 64, maxNumSeqs: 8 } as const;

test('multi-turn conversations outgrowing the pool give the same tokens with the host tier, without it and without caching, and the tier serves their prefixes', async () => {
  const seed = process.env.KEEL_TEST_SEED ? Number(process.env.KEEL_TEST_SEED) : Date.now() % 1_000_000;
  console.log(`host tier test: seed ${seed} (replay with KEEL_TEST_SEED=${seed})`);
  const runs: { name: string; config: EngineOptions }[] = [
    { name: 'no prefix caching', config: { enablePrefixCaching: false } },
    { name: 'device prefix cache only', config: {} },
    { name: 'with the host tier', config: { kvOffloadGb: 0.05 } },
  ];
  const results: { name: string; tokens: number[][][]; stats: ReturnType<LLM['stats']>; outputs: RequestOutput[][] }[] = [];
  for (const { name, config } of runs) {
    // Four conversations reach 14 blocks each by their third turn: the 32-block pool keeps at most two.
    const llm = await LLM.load({ ...BASE, numKvBlocks: 32, ...config });
    try {
      const outputs = await converse(llm, seed, 4, 3);
      const stats = llm.stats();
      assert.equal(stats.numFreeKvBlocks, stats.numKvBlocks, `${name}: every block is free again`);
      results.push({ name, tokens: generated(outputs), stats, outputs });
    } finally {
      await llm.close();
    }
  }
  const [none, device, tiered] = results;
  assert.deepEqual(device.tokens, none.tokens, 'the device prefix cache changes no token');
  assert.deepEqual(tiered.tokens, none.tokens, 'the host tier changes no token');

  assert.equal(device.stats.hostCachedPromptTokensTotal, 0);
  assert.equal(device.stats.numHostCacheBlocks, 0);
  assert.ok(tiered.stats.hostCachedPromptTokensTotal > 0, 'later turns found their history on the host');
  assert.ok(tiered.stats.prefixCacheHitRate > device.stats.prefixCacheHitRate, `hit rate ${tiered.stats.prefixCacheHitRate} with the tier, ${device.stats.prefixCacheHitRate} without`);
  assert.ok(tiered.stats.numHostCachedBlocks > 0 && tiered.stats.numHostCachedBlocks <= tiered.stats.numHostCacheBlocks);
  // Every prompt token served from a cache is counted once, in the tier it came from.
  const all = tiered.outputs.flat();
  const sum = (read: (o: RequestOutput) => number) => all.reduce((n, o) => n + read(o), 0);
  assert.equal(tiered.stats.hostCachedPromptTokensTotal, sum((o) => o.metrics.numHostCachedTokens));
  assert.equal(tiered.stats.deviceCachedPromptTokensTotal + tiered.stats.hostCachedPromptTokensTotal, sum((o) => o.metrics.numCachedTokens));
  assert.equal(tiered.stats.prefixCacheHitRate, sum((o) => o.metrics.numCachedTokens) / tiered.stats.promptTokensTotal);
  // A first turn has no history to find.
  assert.ok(tiered.outputs.every((turns) => turns[0].metrics.numCachedTokens === 0));
});

test('with an int8 KV cache, the host tier moves the scales with the codes: the same tokens as the int8 cache without caching', async () => {
  const int8 = { ...BASE, numKvBlocks: 32, kvCacheDtype: 'int8' } as const;
  const llm = await LLM.load({ ...int8, kvOffloadGb: 0.05 });
  try {
    const reference = await LLM.load({ ...int8, enablePrefixCaching: false });
    try {
      const seed = 11;
      assert.deepEqual(generated(await converse(llm, seed, 4, 3)), generated(await converse(reference, seed, 4, 3)));
    } finally {
      await reference.close();
    }
    assert.ok(llm.stats().hostCachedPromptTokensTotal > 0, 'later turns found their history on the host');
  } finally {
    await llm.close();
  }
});

test('a host tier smaller than the conversations fills to its capacity and no further, changing no token', async () => {
  // 32 KiB blocks (4 layers, 2 KV heads of 64 in float32, 8 tokens): 0.0005 GiB holds 16.
  const llm = await LLM.load({ ...BASE, numKvBlocks: 32, kvOffloadGb: 0.0005 });
  try {
    const reference = await LLM.load({ ...BASE, numKvBlocks: 32, enablePrefixCaching: false });
    try {
      const seed = 7;
      const [small, plain] = [await converse(llm, seed, 4, 3), await converse(reference, seed, 4, 3)];
      assert.deepEqual(generated(small), generated(plain));
    } finally {
      await reference.close();
    }
    const stats = llm.stats();
    assert.equal(stats.numHostCacheBlocks, 16);
    assert.equal(stats.numHostCachedBlocks, 16, 'the tier is full and holds no more than its blocks');
    assert.ok(stats.hostCachedPromptTokensTotal > 0);
  } finally {
    await llm.close();
  }
});

test('with swap preemption, random aborts and the host tier, every request gets its tokens alone, and the pool, swap space and tier end consistent', async () => {
  const seed = process.env.KEEL_TEST_SEED ? Number(process.env.KEEL_TEST_SEED) : Date.now() % 1_000_000;
  console.log(`host tier preemption test: seed ${seed} (replay with KEEL_TEST_SEED=${seed})`);
  const rng = forkStream(seed, 1);
  // Three shared histories, each continued by two requests: most prompts find a prefix.
  const histories = Array.from({ length: 3 }, () => randomTokens(rng, 24 + Math.floor(rng.nextFloat() * 40)));
  const list = Array.from({ length: 6 }, (_, k) => [...histories[k % 3], ...randomTokens(rng, 4 + Math.floor(rng.nextFloat() * 20))]);
  const abortAfter = list.map(() => (rng.nextFloat() < 0.3 ? 1 + Math.floor(rng.nextFloat() * 30) : null));
  const params = { ...GREEDY, maxTokens: 40 };

  const alone = await LLM.load({ ...BASE, enablePrefixCaching: false });
  const expected: number[][] = [];
  try {
    for (const prompt of list) expected.push((await alone.generate([prompt], params))[0].outputs[0].tokenIds);
  } finally {
    await alone.close();
  }

  const llm = await LLM.load({ ...BASE, numKvBlocks: 20, maxNumBatchedTokens: 16, preemptionMode: 'swap', swapSpace: 0.01, kvOffloadGb: 0.01 });
  try {
    // Twice: the second round finds the first round's blocks, on the device or the host.
    for (let round = 0; round < 2; round++) {
      const outputs = await crowd(llm, list, params, abortAfter);
      outputs.forEach((out, k) => {
        const got = out.outputs[0].tokenIds;
        assert.deepEqual(got, expected[k].slice(0, got.length), `round ${round}, prompt ${k}`);
        if (abortAfter[k] === null) assert.equal(got.length, expected[k].length, `round ${round}, prompt ${k} ran to its end`);
      });
    }
    const stats = llm.stats();
    console.log(`${stats.numPreemptionsTotal} preemptions (${stats.numSwapsTotal} swaps), ${stats.hostCachedPromptTokensTotal} prompt tokens from the host tier`);
    assert.ok(stats.numPreemptionsTotal > 0, 'the 20-block pool was meant to force preemption');
    assert.ok(stats.hostCachedPromptTokensTotal > 0, 'prefixes were loaded from the host tier');
    assert.equal(stats.numFreeKvBlocks, stats.numKvBlocks);
    assert.equal(stats.numFreeSwapBlocks, stats.numSwapBlocks);
    assert.equal(stats.numSwapped, 0);
  } finally {
    await llm.close();
  }
});

test('a request aborted in the step that loads its prefix from the host leaves the cache consistent, and the prefix is served again', async () => {
  const options = { ...BASE, numKvBlocks: 12, kvOffloadGb: 0.01 } as const;
  const { engine, backend } = await loadEngine(options);
  try {
    const rng = forkStream(3, 0);
    const history = randomTokens(rng, 48);
    const prompt = [...history, ...randomTokens(rng, 5)];
    const params = resolveSamplingParams({ ...GREEDY, maxTokens: 8 }, {});
    let done: number[] | null = null;
    const run = (id: string, promptTokenIds: number[], onDone?: (ids: number[]) => void) =>
      engine.addRequest({ id, prompt: null, promptTokenIds, params, grammar: null, onUpdate: (r) => r.completions[0].output.finishReason !== null && onDone?.(r.completions[0].output.tokenIds) });
    const drain = () => {
      while (engine.hasUnfinished()) {
        engine.step();
        engine.checkInvariants();
      }
    };
    run('history', history);
    drain();
    // Two other prompts take every block: the history's blocks go to the host.
    run('flood-1', randomTokens(rng, 40));
    drain();
    run('flood-2', randomTokens(rng, 40));
    drain();
    assert.ok(engine.stats().numHostCachedBlocks >= 6);

    const before = engine.stats().hostCachedPromptTokensTotal;
    run('aborted', prompt);
    // The step schedules it with its prefix loaded from the host, and leaves its tokens on the device.
    engine.step();
    assert.ok(engine.stats().hostCachedPromptTokensTotal > before, 'the aborted request was served from the host');
    assert.ok(engine.abort('aborted'));
    engine.checkInvariants();
    drain();
    const stats = engine.stats();
    assert.equal(stats.numFreeKvBlocks, stats.numKvBlocks);

    run('again', prompt, (ids) => (done = ids));
    drain();
    const reference = await LLM.load({ ...BASE, enablePrefixCaching: false });
    try {
      const [expected] = await reference.generate([prompt], { ...GREEDY, maxTokens: 8 });
      assert.deepEqual(done, expected.outputs[0].tokenIds);
    } finally {
      await reference.close();
    }
  } finally {
    backend.dispose();
  }
});

test('host tier options are checked', async () => {
  await assert.rejects(LLM.load({ ...BASE, kvOffloadGb: -1 }), /kvOffloadGb must be a non-negative number of GiB/);
  await assert.rejects(LLM.load({ ...BASE, kvOffloadGb: 1, enablePrefixCaching: false }), /needs prefix caching/);
  await assert.rejects(LLM.load({ ...BASE, kvOffloadGb: 1e-9 }), /kvOffloadGb 1e-9 GiB holds no KV block/);
});
