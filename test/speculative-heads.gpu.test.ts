import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import type { EngineOptions } from '../src/config.ts';
import { CudaBackend } from '../src/backend/cuda/cuda-backend.ts';
import { HeadProposer } from '../src/engine/head-proposer.ts';
import { LLM } from '../src/engine/llm.ts';
import { FIXTURES_DIR } from './helpers/oracle-fixtures.ts';
import { assertGreedyUpToNearTieOrFloat32 } from './helpers/near-tie.ts';

// Speculative heads and self-speculation on CUDA (float32 checkpoints run in bf16). Medusa: the
// heads' residual blocks (silu), the gather of each sequence's hidden row, the tree-masked
// verification. EAGLE, EAGLE-3, MTP: the feature rows written per slot (writeCacheRows) and read
// back (readCacheRows), EAGLE's concatenated inputs (concatColumns), the head's own paged
// attention (a tree-masked chunk for trees), the MTP layer's block of its family (DeepSeek-V3's
// MLA, GLM-4.5's GQA, chains and trees, GLM-5's MLA with its indexer). Greedy outputs must equal
// plain CUDA decoding's up to a near-tie (see speculative-decoding.gpu.test.ts), or where they part
// further, the float32 CPU backend must pick what the speculative run picked: over the MoE fixtures
// a verification chunk and a decode step round the router's scores differently and may choose other
// experts, which moves logits past a near-tie's gap (GLM-4.5's fixture on the H100, 2026-12-05); with
// an 8-bit KV cache, plain decoding over the same cache dtype (the head's K/V 8-bit, its feature rows bf16).

const TARGET = join(FIXTURES_DIR, 'llama-gqa');
const HEADS = join(FIXTURES_DIR, 'spec-heads');
const PROMPTS = [[5, 17, 99, 3, 42], [7, 7, 7, 8, 9, 10, 7, 7, 7, 8], [90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100, 101]];
const GREEDY = { temperature: 0, maxTokens: 40, ignoreEos: true, logprobs: 2 } as const;

const CASES: [string, string, EngineOptions['speculative'], boolean, EngineOptions?][] = [
  // Medusa's heads are fitted to continuations like these: they must accept drafts.
  ['Medusa heads', TARGET, { method: 'medusa', model: join(HEADS, 'medusa-llama-gqa'), numSpeculativeTokens: 3 }, true],
  ['an EAGLE chain', TARGET, { method: 'eagle', model: join(HEADS, 'eagle-llama-gqa'), numSpeculativeTokens: 3 }, false],
  ['an EAGLE-3 tree', TARGET, { method: 'eagle3', model: join(HEADS, 'eagle3-llama-gqa'), numSpeculativeTokens: 3, treeWidth: 2 }, false],
  ['an EAGLE-3 speculators chain', TARGET, { method: 'eagle3', model: join(HEADS, 'eagle3-speculators-llama-gqa'), numSpeculativeTokens: 3 }, false],
  ['MTP', join(FIXTURES_DIR, 'deepseek-v3'), { method: 'mtp', numSpeculativeTokens: 3 }, false],
  ["GLM-4.5's MTP", join(FIXTURES_DIR, 'glm4-moe'), { method: 'mtp', numSpeculativeTokens: 3 }, false],
  ['a GLM-4.5 MTP tree', join(FIXTURES_DIR, 'glm4-moe'), { method: 'mtp', numSpeculativeTokens: 3, treeWidth: 2 }, false],
  ["GLM-5's MTP (its indexer's keys in the head's cache)", join(FIXTURES_DIR, 'glm-moe-dsa'), { method: 'mtp', numSpeculativeTokens: 3 }, false],
  ['an EAGLE-3 tree over an int8 KV cache', TARGET, { method: 'eagle3', model: join(HEADS, 'eagle3-llama-gqa'), numSpeculativeTokens: 3, treeWidth: 2 }, false, { kvCacheDtype: 'int8' }],
  ['MTP over an fp8 KV cache', join(FIXTURES_DIR, 'deepseek-v3'), { method: 'mtp', numSpeculativeTokens: 3 }, false, { kvCacheDtype: 'fp8' }],
  ['self-speculation (1 of 3 layers)', join(FIXTURES_DIR, 'llama-sharded'), { method: 'self', selfSpecLayers: 1, numSpeculativeTokens: 3 }, false],
  ["Qwen3.5's MTP (a rejection rewinds the target's Gated DeltaNet state)", join(FIXTURES_DIR, 'qwen3.5-hybrid'), { method: 'mtp', numSpeculativeTokens: 3 }, false],
  ["Qwen3-Next's MTP (a MoE block)", join(FIXTURES_DIR, 'qwen3-next-moe'), { method: 'mtp', numSpeculativeTokens: 3 }, false],
  ["Qwen3.5-MoE's MTP (mtp.* at the wrapper's top level)", join(FIXTURES_DIR, 'qwen3.5-moe-vl'), { method: 'mtp', numSpeculativeTokens: 3 }, false],
];

for (const [label, model, speculative, accepts, extra] of CASES) {
  test(`CUDA: ${label} decode greedily as plain decoding does`, async () => {
    const base = { model, backend: 'cuda', showProgress: false, numKvBlocks: 128, ...extra } as const;
    const plain = await LLM.load(base);
    const expected = await plain.generate(PROMPTS, GREEDY);
    await plain.close();
    const llm = await LLM.load({ ...base, speculative });
    try {
      const outputs = await llm.generate(PROMPTS, GREEDY);
      await assertGreedyUpToNearTieOrFloat32(outputs, expected.map((e) => e.outputs[0]), model);
      const stats = llm.stats();
      assert.equal(stats.numFreeKvBlocks, stats.numKvBlocks, 'every block is free at the end');
      const speculation = stats.speculation!;
      assert.ok((accepts ? speculation.numAcceptedTokens : speculation.numDraftTokens) > 0, `drafts were ${accepts ? 'accepted' : 'proposed'}: ${JSON.stringify(speculation)}`);
    } finally {
      await llm.close();
    }
  });
}

/** Runs `run` counting the CUDA graph replays (and recordings) of every CUDA backend: the target's, and a head's drafting passes. */
async function countingReplays<T>(run: () => Promise<T>): Promise<{ result: T; replays: number; headReplays: number }> {
  const original = CudaBackend.prototype.replayForward;
  let replays = 0;
  let headReplays = 0;
  CudaBackend.prototype.replayForward = function <R>(this: CudaBackend, step: Parameters<CudaBackend['replayForward']>[0], owner: object, forward: () => R): R {
    if (owner instanceof HeadProposer) headReplays++;
    else replays++;
    return original.call(this, step, owner, forward) as R;
  };
  try {
    return { result: await run(), replays, headReplays };
  } finally {
    CudaBackend.prototype.replayForward = original;
  }
}

// With heads loaded, plain decode steps replay CUDA graphs: speculation is off while 2 or more
// sequences run (disableByBatchSize), so the three requests decode together in graph steps (the
// forward writes every token's feature row at the step's slots on the device; Medusa's hidden
// rows are among the graph's results) until the shorter ones end, then the last speculates from
// what those graphs wrote, a chain's drafting passes replaying graphs of the head.
const GRAPH_CASES: [string, string, EngineOptions['speculative']][] = [
  ['Medusa heads', TARGET, { method: 'medusa', model: join(HEADS, 'medusa-llama-gqa'), numSpeculativeTokens: 3, disableByBatchSize: 2 }],
  ['an EAGLE chain', TARGET, { method: 'eagle', model: join(HEADS, 'eagle-llama-gqa'), numSpeculativeTokens: 3, disableByBatchSize: 2 }],
  ['an EAGLE-3 chain', TARGET, { method: 'eagle3', model: join(HEADS, 'eagle3-llama-gqa'), numSpeculativeTokens: 3, disableByBatchSize: 2 }],
  ['an EAGLE-3 tree', TARGET, { method: 'eagle3', model: join(HEADS, 'eagle3-llama-gqa'), numSpeculativeTokens: 3, treeWidth: 2, disableByBatchSize: 2 }],
  ['MTP', join(FIXTURES_DIR, 'deepseek-v3'), { method: 'mtp', numSpeculativeTokens: 3, disableByBatchSize: 2 }],
  ["GLM-4.5's MTP", join(FIXTURES_DIR, 'glm4-moe'), { method: 'mtp', numSpeculativeTokens: 3, disableByBatchSize: 2 }],
  ["GLM-5's MTP", join(FIXTURES_DIR, 'glm-moe-dsa'), { method: 'mtp', numSpeculativeTokens: 3, disableByBatchSize: 2 }],
  // A hybrid: graphs pad with the scratch state slot, and the speculating request rewinds its state.
  ["Qwen3.5's MTP", join(FIXTURES_DIR, 'qwen3.5-hybrid'), { method: 'mtp', numSpeculativeTokens: 3, disableByBatchSize: 2 }],
];

for (const [label, model, speculative] of GRAPH_CASES) {
  test(`CUDA: with ${label} loaded, plain decode steps replay graphs, and speculation resumes from what they wrote`, async () => {
    const base = { model, backend: 'cuda', showProgress: false, numKvBlocks: 128 } as const;
    const generate = (llm: LLM) => Promise.all(PROMPTS.map((prompt, i) => llm.generate([prompt], { ...GREEDY, maxTokens: 10 + 15 * i }).then(([o]) => o)));
    const plain = await LLM.load(base);
    const expected = await generate(plain);
    await plain.close();
    const llm = await LLM.load({ ...base, speculative });
    try {
      const { result: outputs, replays, headReplays } = await countingReplays(() => generate(llm));
      await assertGreedyUpToNearTieOrFloat32(outputs, expected.map((e) => e.outputs[0]), model);
      assert.ok(replays > 0, 'plain decode steps replayed graphs');
      // EAGLE, EAGLE-3 and MTP chains' drafting passes (after the catch-up) replay the head's graphs; trees and Medusa run eagerly.
      const chain = speculative!.method !== 'medusa' && speculative!.treeWidth === undefined;
      assert.equal(headReplays > 0, chain, `${headReplays} drafting passes replayed`);
      const speculation = llm.stats().speculation!;
      assert.ok(speculation.numDraftTokens > 0, `the last request speculated: ${JSON.stringify(speculation)}`);
    } finally {
      await llm.close();
    }
  });
}
