import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LLM } from '../src/engine/llm.ts';
import { assertOffloadKeepsTokens } from './helpers/weight-offload-runs.ts';
import { loadModel } from '../src/engine/load-engine.ts';

// Weight offload (--cpu-offload-gb, docs/long-context.md) on the CPU backend, which streams the
// offloaded layers through shared buffers with plain copies: a layer that ran before its fetch,
// or after the next fetch into its buffers, would compute with another layer's weights.

const BASE = { backend: 'cpu', showProgress: false, numKvBlocks: 64, blockSize: 8, maxNumBatchedTokens: 32 } as const;
const GREEDY = { temperature: 0, ignoreEos: true, maxTokens: 20 } as const;
const PROMPTS = [[5, 9, 2, 77, 31], Array.from({ length: 45 }, (_, i) => 100 + 3 * i), [8, 8, 100, 3, 41, 2, 9, 19, 4]];

test('streaming one to all of keel-tiny\'s layers from host memory gives the tokens of the model kept whole', async () => {
  await assertOffloadKeepsTokens(BASE, PROMPTS, GREEDY);
});

test('the offloaded layers\' weights are kept on the host once, and the device holds two layers\' buffers', async () => {
  const perLayer = async (cpuOffloadGb: number) => {
    const loaded = await loadModel({ ...BASE, cpuOffloadGb });
    try {
      const { layers, stream } = loaded.offload!;
      return { layers, hostBytes: stream.hostBytes, deviceBytes: stream.deviceBytes };
    } finally {
      loaded.backend.dispose();
    }
  };
  const one = await perLayer(0.004);
  const all = await perLayer(1);
  assert.deepEqual(one.layers, [2]);
  assert.deepEqual(all.layers, [0, 1, 2, 3]);
  // keel-tiny's layers are alike: one layer's worth on the host and on the device, then four and two.
  assert.equal(one.deviceBytes, one.hostBytes);
  assert.equal(all.hostBytes, 4 * one.hostBytes);
  assert.equal(all.deviceBytes, 2 * one.hostBytes);
});

for (const parallel of [{ tensorParallelSize: 2 }, { pipelineParallelSize: 2 }]) {
  test(`in a parallel run (${JSON.stringify(parallel)}, ranks in worker threads), every rank streaming its own shard of one to all of its stage's layers gives the tokens of the run kept whole`, async () => {
    await assertOffloadKeepsTokens({ ...BASE, ...parallel }, PROMPTS, GREEDY);
  });
}

test('at TP 2 each rank counts its half of a layer against the GiB given and keeps only that half on the host', async () => {
  const offloaded = async (options: Parameters<typeof LLM.load>[0]) => {
    const llm = await LLM.load({ ...BASE, ...options });
    try {
      return llm.weightOffload!;
    } finally {
      await llm.close();
    }
  };
  // 0.004 GiB holds one of keel-tiny's 3 MiB layers, or two of a rank's 1.5 MiB halves.
  const whole = await offloaded({ cpuOffloadGb: 0.004 });
  const half = await offloaded({ cpuOffloadGb: 0.004, tensorParallelSize: 2 });
  assert.deepEqual(whole.layers, [2]);
  assert.deepEqual(half.layers, [1, 3]);
  // Per layer, rank 0 keeps half of the whole layer's bytes, and its replicated norms in full (2 × 384 values).
  const perLayer = half.hostBytes / 2;
  assert.ok(perLayer > whole.hostBytes / 2 && perLayer < whole.hostBytes / 2 + 2 * 384 * 4, `${perLayer} bytes of a layer on rank 0, ${whole.hostBytes} on one device`);
});

test('weight offload options are checked', async () => {
  await assert.rejects(LLM.load({ ...BASE, cpuOffloadGb: -1 }), /cpuOffloadGb must be a non-negative number of GiB/);
  await assert.rejects(LLM.load({ ...BASE, cpuOffloadGb: 1e-6 }), /cpuOffloadGb 0.000001 GiB holds no decoder layer/);
});
