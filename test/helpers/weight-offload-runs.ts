import assert from 'node:assert/strict';
import type { EngineOptions } from '../../src/config.ts';
import { LLM } from '../../src/engine/llm.ts';
import type { SamplingParams } from '../../src/sampling/sampling-params.ts';
import { layerBytes } from '../../src/engine/weight-offload.ts';

/**
 * Checks that streaming 1, 2, ... of the model's (alike) layers gives the greedy tokens of the
 * model kept whole. In a parallel run (`base`'s sizes) every rank streams that many of its
 * stage's layers, each its 1/N shard of them.
 */
export async function assertOffloadKeepsTokens(base: EngineOptions, prompts: number[][], params: Partial<SamplingParams>): Promise<void> {
  const resident = await LLM.load(base);
  const expected = (await resident.generate(prompts, params)).map((o) => o.outputs[0].tokenIds);
  const layers = resident.model.layerParameters!();
  await resident.close();
  for (let count = 1; count <= layers.length; count++) {
    const llm = await LLM.load({ ...base, cpuOffloadGb: (count * layerBytes(layers[0])) / (base.tensorParallelSize ?? 1) / 2 ** 30 });
    try {
      const offload = llm.weightOffload!;
      assert.equal(offload.layers.length, count, `${count} of rank 0's layers stream`);
      // The model's layers are alike and split evenly: every other rank keeps as many bytes on the host as rank 0.
      const otherRanks = (base.tensorParallelSize ?? 1) * (base.pipelineParallelSize ?? 1) - 1;
      assert.equal(offload.otherRanksHostBytes, otherRanks * offload.hostBytes, 'every rank streams its own shard');
      const got = (await llm.generate(prompts, params)).map((o) => o.outputs[0].tokenIds);
      assert.deepEqual(got, expected, `${count} layers streamed`);
    } finally {
      await llm.close();
    }
  }
}
