import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { cudaAvailability } from '../src/backend/cuda/availability.ts';
import type { EngineOptions } from '../src/config.ts';
import { LLM } from '../src/engine/llm.ts';
import { assertKilledRankFailsLoudly } from './helpers/killed-rank.ts';
import { listOracleFixtures } from './helpers/oracle-fixtures.ts';
import { checkGreedy, checkHostTierRerun, type ParityOptions } from './helpers/transformers-parity.ts';

// Parallel runs on CUDA (docs/parallelism.md): the engine's process is rank 0 on GPU 0, one worker
// process per other GPU, NCCL between them. NCCL refuses two ranks on one GPU ("Duplicate GPU
// detected"), so on a host with one GPU only the refusal is tested here (the one-rank NCCL path is
// test/backend/cuda/nccl.gpu.test.ts); the rest needs two GPUs (the H200 x2 host) or four for TP 2 × PP 2.

const visible = (() => {
  const availability = cudaAvailability();
  return availability.ok ? availability.deviceCount : 0;
})();
const needs = (gpus: number) => (visible >= gpus ? false : `needs ${gpus} GPUs (NCCL refuses two ranks on one GPU); ${visible} visible`);

// bf16 on every rank: tensor parallel sums partial products in another order, so a near-tie may flip (as in transformers-parity.gpu.test.ts).
const PARITY: ParityOptions = { backend: 'cuda', logitTolerance: 0.125, acceptBf16ReferenceError: true, greedy: 'top-candidates' };
const fixture = (name: string) => listOracleFixtures().find((f) => f.name === name)!;

test('a run of more ranks than visible GPUs is refused, naming both', { skip: visible === 0 ? 'no GPU' : false }, async () => {
  const ranks = visible + 1;
  await assert.rejects(
    LLM.load({ model: fixture('llama-gqa').dir, backend: 'cuda', showProgress: false, pipelineParallelSize: ranks > 2 ? 1 : 2, tensorParallelSize: ranks > 2 ? ranks : 1 }),
    new RegExp(`needs ${ranks} GPUs, one per rank, and ${visible} are visible`),
  );
});

const RUNS: { name: string; gpus: number; parallel: EngineOptions }[] = [
  { name: 'llama-gqa', gpus: 2, parallel: { tensorParallelSize: 2 } },
  // Two micro-batches in flight (the default), and one (CUDA graphs on rank 0 then).
  { name: 'llama-gqa', gpus: 2, parallel: { pipelineParallelSize: 2 } },
  { name: 'llama-gqa', gpus: 2, parallel: { pipelineParallelSize: 2, pipelineMicroBatches: 1 } },
  { name: 'qwen3-moe', gpus: 2, parallel: { tensorParallelSize: 2, enableExpertParallel: true } },
  { name: 'deepseek-v2-lite', gpus: 2, parallel: { pipelineParallelSize: 2 } },
  { name: 'llama-gqa', gpus: 4, parallel: { tensorParallelSize: 2, pipelineParallelSize: 2 } },
  // GLM-5's layers [full, shared, full] one per stage: stage 0 sends layer 0's sparse-attention choice to
  // stage 1's shared layer (sendSelectionToStage: int32 positions as raw bf16 pairs over NCCL).
  { name: 'glm-moe-dsa', gpus: 3, parallel: { pipelineParallelSize: 3 } },
];

for (const { name, gpus, parallel } of RUNS) {
  const microBatches = parallel.pipelineMicroBatches === undefined ? '' : `, ${parallel.pipelineMicroBatches} micro-batch in flight`;
  describe(`${name}, TP ${parallel.tensorParallelSize ?? 1} × PP ${parallel.pipelineParallelSize ?? 1}${microBatches}, worker processes`, { skip: needs(gpus) }, () => {
    test('greedy continuation of every prompt, batched, matches transformers\'', async () => {
      await checkGreedy(fixture(name), PARITY, { ...parallel, backend: 'cuda' }, false);
    });
    test('greedy continuation under forced preemption (8-block pool) matches transformers\'', async () => {
      await checkGreedy(fixture(name), PARITY, { ...parallel, backend: 'cuda', numKvBlocks: 8 }, true);
    });
    // Every rank swaps, stores and loads its own KV shard in pinned memory of its own, on its own transfer stream.
    test('greedy continuation under forced preemption by swap (8-block pool, 8-token steps) matches transformers\'', async () => {
      await checkGreedy(fixture(name), PARITY, { ...parallel, backend: 'cuda', numKvBlocks: 8, maxNumBatchedTokens: 8, preemptionMode: 'swap', swapSpace: 0.01 }, true);
    });
    test('prompts evicted to the prefix cache\'s host tier and loaded back match transformers\'', async () => {
      await checkHostTierRerun(fixture(name), PARITY, { ...parallel, backend: 'cuda' });
    });
    test('every rank streaming all of its stage\'s decoder layers from host memory matches transformers\'', async () => {
      await checkGreedy(fixture(name), PARITY, { ...parallel, backend: 'cuda', cpuOffloadGb: 64 }, false);
    });
  });
}

test('a killed worker process fails the request waiting on it, naming its rank, and the server answers 503', { skip: needs(2) }, async () => {
  // The engine may be waiting on the GPU for the dead rank's all-reduce: ncclCommAbort ends that wait.
  const llm = await LLM.load({ model: fixture('llama-gqa').dir, backend: 'cuda', showProgress: false, numKvBlocks: 64, tensorParallelSize: 2 });
  await assertKilledRankFailsLoudly(llm, 1, [1, 2, 3, 4], /parallel rank 1 failed: its worker process exited/);
});
