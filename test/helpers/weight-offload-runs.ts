import assert from 'node:assert/strict';
import type { EngineOptions } from '../../src/config.ts';
import { LLM } from '../../src/engine/llm.ts';
import type { SamplingParams } from '../../src/sampling/sampling-params.ts';
import { layerBytes } from '../../src/engine/weight-offload.ts';

/** Checks that streaming 1, 2, ... of the model's (alike) layers gives the greedy tokens of the model kept whole. */
export async function assertOffloadKeepsTokens(base: EngineOptions, prompts: number[][], params: Partial<SamplingParams>): Promise<void> {
  const resident = await LLM.load(base);
  const expected = (await resident.generate(prompts, params)).map((o) => o.outputs[0].tokenIds);
  const layers = resident.model.layerParameters!();
  await resident.close();
  for (let count = 1; count <= layers.length; count++) {
    const llm = await LLM.load({ ...base, cpuOffloadGb: (count * layerBytes(layers[0])) / 2 ** 30 });
    try {
      const got = (await llm.generate(prompts, params)).map((o) => o.outputs[0].tokenIds);
      assert.deepEqual(got, expected, `${count} layers streamed`);
    } finally {
      await llm.close();
    }
  }
}
