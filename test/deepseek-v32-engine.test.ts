import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LLM } from '../src/engine/llm.ts';
import { loadModel } from '../src/engine/load-engine.ts';
import { describeBatch } from '../src/step/batch.ts';
import { resolveKvCacheDtype } from '../src/step/kv-cache-layout.ts';
import { listOracleFixtures, maxAbsDiff } from './helpers/oracle-fixtures.ts';

// DeepSeek-V3.2's indexer keys live in a pool beside the MLA latent (docs/long-context.md): swap
// preemption must move them with the latent, and an 8-bit cache stores both in its dtype (the keys
// with a scale each), which every way of running a prompt must read back alike.
// (The parity suite covers batching, prefix caching, chunked prefill, recompute preemption,
// speculative decoding and the host tier against transformers.)

const fixture = listOracleFixtures().find((f) => f.name === 'deepseek-v32')!;
const GREEDY = { temperature: 0, ignoreEos: true, maxTokens: fixture.oracle.max_new_tokens } as const;
const BASE = { model: fixture.dir, backend: 'cpu', showProgress: false, blockSize: 4, maxNumBatchedTokens: 16 } as const;

test('deepseek-v32 under swap preemption gives transformers\' greedy tokens: the indexer keys are swapped out and back with the latent', async () => {
  const llm = await LLM.load({ ...BASE, numKvBlocks: 24, preemptionMode: 'swap', swapSpace: 0.01 });
  try {
    const outputs = await llm.generate(fixture.oracle.prompts, GREEDY);
    outputs.forEach((out, i) => assert.deepEqual(out.outputs[0].tokenIds, fixture.oracle.greedy[i], `prompt ${i}`));
    assert.ok(llm.stats().numSwapsTotal > 0, 'the 24-block pool was meant to force swaps');
  } finally {
    await llm.close();
  }
});

const NGRAM = { method: 'ngram', numSpeculativeTokens: 4, ngramMin: 1, ngramMax: 3 } as const;

for (const kvCacheDtype of ['int8', 'fp8'] as const) {
  test(`deepseek-v32 with an ${kvCacheDtype} KV cache: every prompt batched, chunked, preempted (recompute and swap) and verified from n-gram drafts gives the tokens it gives alone`, async () => {
    const options = { ...BASE, kvCacheDtype } as const;
    const alone = await LLM.load(options);
    const expected: number[][] = [];
    try {
      for (const prompt of fixture.oracle.prompts) expected.push((await alone.generate([prompt], GREEDY))[0].outputs[0].tokenIds);
    } finally {
      await alone.close();
    }
    const variants = [
      { numKvBlocks: 24 },
      { numKvBlocks: 24, preemptionMode: 'swap', swapSpace: 0.01 },
      { speculative: NGRAM, maxNumBatchedTokens: 7 },
    ] as const;
    for (const variant of variants) {
      const crowded = await LLM.load({ ...options, ...variant });
      try {
        const outputs = await crowded.generate(fixture.oracle.prompts, GREEDY);
        outputs.forEach((out, i) => assert.deepEqual(out.outputs[0].tokenIds, expected[i], `${JSON.stringify(variant)}: prompt ${i}`));
        const stats = crowded.stats();
        if ('numKvBlocks' in variant) assert.ok(outputs.some((o) => o.metrics.numPreemptions > 0), 'the 24-block pool was meant to force preemption');
        if ('swapSpace' in variant) assert.ok(stats.numSwapsTotal > 0, 'the 24-block pool was meant to force swaps');
        if ('speculative' in variant) assert.ok(stats.speculation !== null && stats.speculation.numDraftTokens > 0, `drafts were verified: ${JSON.stringify(stats.speculation)}`);
      } finally {
        await crowded.close();
      }
    }
  });
}

// The fixture's 8 positions a token make its logits sensitive to any rounding of the cache (a key
// one code apart can change a selection): seen, max |Δlogit| 0.30 with int8 and 0.93 with fp8 (its
// latent rows at scale 1, as dense MLA keeps them), for logits of standard deviation 0.8.
const DRIFT_BOUNDS = { int8: 0.6, fp8: 1.8 } as const;

test('deepseek-v32 prompt logits with an 8-bit KV cache stay within a bound of transformers\' float32 ones, and do move', async () => {
  for (const [kvCacheDtype, bound] of Object.entries(DRIFT_BOUNDS)) {
    const loaded = await loadModel({ model: fixture.dir, backend: 'cpu', showProgress: false, blockSize: 16 });
    try {
      let next = 0;
      const chunks = fixture.oracle.prompts.map((tokens) => {
        const blockTable = Array.from({ length: Math.ceil(tokens.length / 16) }, () => next++);
        return { tokens, startPos: 0, blockTables: [blockTable] };
      });
      const cache = loaded.backend.createKvCache({ numBlocks: next, blockSize: 16, layers: loaded.model.kvLayers, dtype: resolveKvCacheDtype(kvCacheDtype as 'int8' | 'fp8') });
      const logits = loaded.backend.toHost(loaded.model.forward(loaded.backend, loaded.backend.beginStep(describeBatch(chunks, 16)), cache));
      const vocab = loaded.modelConfig.vocabSize;
      const drifts = chunks.map((_, i) => maxAbsDiff(logits.subarray(i * vocab, (i + 1) * vocab), fixture.oracle.last_logits[i]));
      console.log(`# ${kvCacheDtype}: max |Δlogit| per prompt ${drifts.map((d) => d.toFixed(4)).join(', ')}`);
      assert.ok(Math.max(...drifts) <= bound, `${kvCacheDtype}: max |Δlogit| ${Math.max(...drifts)} > ${bound}`);
      assert.ok(Math.max(...drifts) > 1e-3, `${kvCacheDtype}: the cache's rounding moved no logit`);
    } finally {
      loaded.backend.dispose();
    }
  }
});

test('deepseek-v32 refuses n-gram draft trees at load, naming the option: latent attention verifies chains only', async () => {
  for (const kvCacheDtype of ['auto', 'int8'] as const) {
    await assert.rejects(
      LLM.load({ ...BASE, kvCacheDtype, speculative: { ...NGRAM, ngramBranches: 3 } }),
      /--ngram-branches 3: multi-head latent attention has no tree attention, so drafts must be chains/,
    );
  }
});
