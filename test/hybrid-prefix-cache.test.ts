import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import type { Backend } from '../src/backend/backend.ts';
import { BlockPool } from '../src/engine/block-pool.ts';
import { KvCacheManager } from '../src/engine/kv-cache-manager.ts';
import { LLM } from '../src/engine/llm.ts';
import { loadModel, type LoadedModel } from '../src/engine/load-engine.ts';
import { ModelRunner } from '../src/engine/model-runner.ts';
import { Scheduler } from '../src/engine/scheduler.ts';
import { Sequence } from '../src/engine/sequence.ts';
import { StateCheckpoints } from '../src/engine/state-checkpoints.ts';
import { stateSlotLayout } from '../src/engine/state-slots.ts';
import { drawFor } from '../src/sampling/draw.ts';
import { forkStream } from '../src/sampling/rng.ts';
import { DEFAULT_SAMPLING_PARAMS } from '../src/sampling/sampling-params.ts';
import { recordingBackend, type Replayed } from './helpers/graph-recording-backend.ts';
import { FIXTURES_DIR, listOracleFixtures } from './helpers/oracle-fixtures.ts';

// Prefix caching of a hybrid model (Qwen3-Next's Gated DeltaNet layers keep a state per sequence):
// a hit restores the state kept at its last block (a state checkpoint), so it ends at the last
// cached block with one, and every continuation is the cold run's.

const NAME = 'qwen3-next-moe';
const FIXTURE = join(FIXTURES_DIR, NAME);
const oracle = listOracleFixtures().find((f) => f.name === NAME)!.oracle;
const GREEDY = { temperature: 0, ignoreEos: true } as const;
const BASE = { model: FIXTURE, backend: 'cpu', showProgress: false, blockSize: 4, numKvBlocks: 256 } as const;

async function withLLM<T>(options: Parameters<typeof LLM.load>[0], body: (llm: LLM) => Promise<T>): Promise<T> {
  const llm = await LLM.load({ ...BASE, ...options });
  try {
    return await body(llm);
  } finally {
    await llm.close();
  }
}

/** Greedy tokens of each prompt without prefix caching. */
function coldTokens(prompts: number[][], maxTokens: number): Promise<number[][]> {
  return withLLM({ enablePrefixCaching: false }, async (llm) => (await llm.generate(prompts, { ...GREEDY, maxTokens })).map((o) => o.outputs[0].tokenIds));
}

/** Every sequence slot is free again, every block too, and each pool is whole. */
function assertPoolsWhole(llm: LLM): void {
  const stats = llm.stats();
  assert.equal(stats.numFreeKvBlocks, stats.numKvBlocks, 'every KV block is free');
  assert.ok(stats.numStateSlots > 0);
  assert.equal(stats.numFreeStateSlots, stats.numStateSlots, 'every sequence state slot is free');
}

test('a prompt sharing a cached prefix continues as a cold run, its hit ending at the last block whose state was kept', async () => {
  const prompt = oracle.prompts[3];
  assert.equal(prompt.length, 70);
  const maxTokens = 6;
  await withLLM({ maxNumBatchedTokens: 32 }, async (llm) => {
    // Chunks of 32 end at blocks 32 and 64; the last chunk stops at 68, the last boundary before
    // the prompt's last token; decodes keep the state after 72.
    const [first] = await llm.generate([prompt], { ...GREEDY, maxTokens });
    const out = first.outputs[0].tokenIds;
    const cases: { label: string; prompt: number[]; hit: number }[] = [
      { label: 'cached blocks up to 60, the last state kept before them at 32', prompt: [...prompt.slice(0, 62), 1, 2, 3], hit: 32 },
      { label: 'a shared prefix ending inside a block', prompt: [...prompt.slice(0, 66), 1, 2], hit: 64 },
      { label: 'the same prompt again', prompt, hit: 68 },
      { label: 'the conversation so far and a new turn', prompt: [...prompt, ...out.slice(0, 5), 7, 8, 9], hit: 72 },
      { label: 'another first token', prompt: [(prompt[0] + 1) % 200, ...prompt.slice(1)], hit: 0 },
    ];
    const cold = await coldTokens(cases.map((c) => c.prompt), maxTokens);
    for (const [i, c] of cases.entries()) {
      const [warm] = await llm.generate([c.prompt], { ...GREEDY, maxTokens });
      assert.equal(warm.metrics.numCachedTokens, c.hit, `${c.label}: tokens served from the prefix cache`);
      assert.deepEqual(warm.outputs[0].tokenIds, cold[i], `${c.label}: the cold run's tokens`);
    }
    assertPoolsWhole(llm);
  });
});

test('under pressure on a few state checkpoints, the least recently used (and a sequence\'s superseded decode states) go first; evicted ones give no hit', async () => {
  await withLLM({ numStateCheckpoints: 2 }, async (llm) => {
    for (const prompt of oracle.prompts) {
      await llm.generate([prompt], { ...GREEDY, maxTokens: oracle.max_new_tokens });
      assert.ok(llm.stats().numStateCheckpoints <= 2);
    }
    const again = await llm.generate(oracle.prompts, { ...GREEDY, maxTokens: oracle.max_new_tokens });
    again.forEach((o, i) => assert.deepEqual(o.outputs[0].tokenIds, oracle.greedy[i], `prompt ${i}`));
    // The last prompt's state after 68 tokens outlived its decodes' states, each replacing the one
    // before; the earlier prompts' were evicted, though their blocks are still cached.
    assert.deepEqual(again.map((o) => o.metrics.numCachedTokens), [0, 0, 0, 68]);
    assert.ok(llm.stats().numCachedKvBlocks > 17);
    assertPoolsWhole(llm);
  });
});

test('preemption, aborts and forks (n = 2) over prefix hits give transformers\' tokens and return every slot and block', async () => {
  // 32 blocks of 4 tokens for the four prompts and their continuations (some 230 tokens): sequences are preempted and recompute.
  await withLLM({ numKvBlocks: 32 }, async (llm) => {
    for (let run = 0; run < 2; run++) {
      const outputs = await llm.generate(oracle.prompts, { ...GREEDY, maxTokens: oracle.max_new_tokens });
      outputs.forEach((o, i) => assert.deepEqual(o.outputs[0].tokenIds, oracle.greedy[i], `run ${run}, prompt ${i}`));
      assert.ok(outputs.some((o) => o.metrics.numPreemptions > 0), 'the pool was meant to force preemption');
      assertPoolsWhole(llm);
    }
    // Aborted after its first token, while its checkpoints' fills may still be pending.
    const controller = new AbortController();
    let streamed = 0;
    for await (const update of llm.stream(oracle.prompts[2], { ...GREEDY, maxTokens: oracle.max_new_tokens }, { signal: controller.signal })) {
      streamed = update.output.outputs[0].tokenIds.length;
      if (streamed > 0) controller.abort();
    }
    assert.ok(streamed > 0 && streamed < oracle.max_new_tokens, 'aborted mid-generation');
    assertPoolsWhole(llm);
    const [forked] = await llm.generate([oracle.prompts[2]], { ...GREEDY, n: 2, maxTokens: oracle.max_new_tokens });
    assert.ok(forked.metrics.numCachedTokens > 0, 'the forked request was served from the prefix cache');
    forked.outputs.forEach((o, i) => assert.deepEqual(o.tokenIds, oracle.greedy[2], `completion ${i}`));
    assertPoolsWhole(llm);
  });
});

test('MTP drafts continue from a restored state as from a computed one: the second run, served from the prefix cache, gives transformers\' tokens', async () => {
  await withLLM({ speculative: { method: 'mtp', numSpeculativeTokens: 2 } }, async (llm) => {
    const params = { ...GREEDY, maxTokens: oracle.max_new_tokens };
    await llm.generate(oracle.prompts, params);
    const again = await llm.generate(oracle.prompts, params);
    again.forEach((o, i) => assert.deepEqual(o.outputs[0].tokenIds, oracle.greedy[i], `prompt ${i}`));
    // Each prompt's prefill stopped at the last block boundary before its last token.
    assert.deepEqual(again.map((o) => o.metrics.numCachedTokens), oracle.prompts.map((p) => Math.floor((p.length - 1) / 4) * 4));
    assert.ok(llm.stats().speculation!.numDraftTokens > 0);
    assertPoolsWhole(llm);
  });
});

test('prefix caching stays off for a hybrid model without state checkpoints', async () => {
  await withLLM({ numStateCheckpoints: 0 }, async (llm) => {
    await llm.generate([oracle.prompts[1]], { ...GREEDY, maxTokens: 2 });
    const [again] = await llm.generate([oracle.prompts[1]], { ...GREEDY, maxTokens: 2 });
    assert.equal(again.metrics.numCachedTokens, 0);
    assert.equal(llm.stats().numStateCheckpoints, 0);
  });
});

/** Greedy tokens of waves of prompts through one runner (later waves hitting earlier ones' prefixes), and the tokens each admission found cached. */
function runWaves(backend: Backend, model: LoadedModel, waves: number[][][], graphs: boolean): { tokens: number[][]; cached: number[] } {
  const blockSize = 4;
  const numBlocks = 64;
  const layout = stateSlotLayout(model.model.kvLayers, { maxNumSeqs: 4, speculative: null, enablePrefixCaching: true, numStateCheckpoints: 8 });
  const cache = backend.createKvCache({ numBlocks: numBlocks + 1, blockSize, layers: model.model.kvLayers, stateSlots: layout.total });
  const kv = new KvCacheManager(new BlockPool(numBlocks, true), {
    blockSize,
    enablePrefixCaching: true,
    groups: [null],
    nullBlock: numBlocks,
    stateSlots: layout.sequences,
    stateCheckpoints: new StateCheckpoints(layout.firstCheckpoint, layout.checkpoints),
  });
  const scheduler = new Scheduler({ maxNumSeqs: 4, maxNumBatchedTokens: 256, blockSize, maxModelLen: 256 }, kv);
  const runner = new ModelRunner(backend, model.model, cache, blockSize, graphs ? { maxBatchSize: 4, scratchBlock: numBlocks, scratchStateSlot: layout.scratch } : null);
  const context = { rng: forkStream(0, 0), penaltyTokens: null, numOutputTokens: 0, draftHistory: null, eosTokenIds: [], allowedTokens: null, logitBias: null, bannedTokenIds: [] };
  const outputs: number[][] = [];
  const cached: number[] = [];
  for (const prompts of waves) {
    const seqs = prompts.map((p, i) => new Sequence(`r${outputs.length + i}`, p));
    for (const seq of seqs) scheduler.add(seq);
    for (let step = 0; step < 10; step++) {
      const output = scheduler.schedule();
      for (const { numCachedTokens } of output.scheduled) if (numCachedTokens !== undefined) cached.push(numCachedTokens);
      const result = runner.execute(output, {
        drawsFor: (_s, site) => [drawFor({ ...DEFAULT_SAMPLING_PARAMS, temperature: 0 }, { ...context, ...site })],
        draftDraw: () => assert.fail('no draft model'),
        draftDrawReadsDrafts: () => assert.fail('no draft model'),
        verificationReadsDrafts: () => assert.fail('no drafting head'),
        promptTopLogprobs: () => 0,
      });
      scheduler.onStepComplete(output);
      result.samplingRows.forEach((s, row) => output.scheduled[s].seq.appendToken(result.read().tokenIds[result.firstDraw[row]]));
    }
    for (const seq of seqs) scheduler.finish(seq);
    kv.checkInvariants([]);
    outputs.push(...seqs.map((s) => s.tokenIds.slice(s.numPromptTokens)));
  }
  return { tokens: outputs, cached };
}

test('decode steps replayed as CUDA graphs (the graph-recording CPU backend) give eager steps\' tokens over restored states', async () => {
  const model = await loadModel({ model: FIXTURE, backend: 'cpu', showProgress: false });
  try {
    const [p1, p2] = [oracle.prompts[1], oracle.prompts[2]];
    const waves = [[p1, p2], [[...p1, 9, 9], [...p2.slice(0, 38), 5], p1]];
    const eager = runWaves(model.backend, model, waves, false);
    // The second wave's hits: p1's 17 tokens and two more (16, where its prefill's first chunk
    // stopped), p2's first 38 (36, likewise), and p1 again (16).
    assert.deepEqual(eager.cached, [0, 0, 16, 36, 16]);
    const replayed: Replayed[] = [];
    assert.deepEqual(runWaves(recordingBackend(model.backend, replayed), model, waves, true), eager);
    assert.ok(replayed.length > 0, 'decode steps replayed graphs');
  } finally {
    model.backend.dispose();
  }
});
