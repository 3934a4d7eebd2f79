import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { SafetensorsFile } from '../src/checkpoint/safetensors.ts';
import { LLM } from '../src/engine/llm.ts';
import type { RequestOutput } from '../src/engine/outputs.ts';
import { hostTensorToFloat32 } from '../src/tensor/host-dtype.ts';
import { float32Tensor } from '../src/tensor/host-ops.ts';
import type { HostTensor } from '../src/tensor/host-tensor.ts';
import { TestRandom, testSeed } from './helpers/cpu-random.ts';
import { FIXTURES_DIR } from './helpers/oracle-fixtures.ts';
import { writeSafetensors } from './helpers/model-safetensors-writer.ts';
import { tempDir } from './helpers/model-temp-dir.ts';

// A model whose RoPE pairs interleaved dims loads q_proj's and k_proj's rows permuted within each
// head (layers/interleaved-rope.ts); an adapter's B rows for them must follow, or its delta lands
// on other dims. GLM's rotary part is the leading half of each head, so the permutation leaves the
// other half in place. Served live, the adapter must give what its weights merged into the
// checkpoint give.

const BASE = join(FIXTURES_DIR, 'glm-partial-interleaved');
const RANK = 4;
const ALPHA = 8;
const MODULES = ['self_attn.q_proj', 'self_attn.k_proj', 'mlp.gate_up_proj'];

/** Draws A [rank, in] and B [out, rank] for every module of every layer; writes the adapter and the merged checkpoint. */
function writeAdapterAndMerged(dir: string, random: TestRandom): { adapter: string; merged: string } {
  const config = JSON.parse(readFileSync(join(BASE, 'config.json'), 'utf8'));
  const file = SafetensorsFile.open(join(BASE, 'model.safetensors'));
  const weights: Record<string, HostTensor> = {};
  const lora: Record<string, HostTensor> = {};
  try {
    for (const name of file.tensors.keys()) weights[name] = float32Tensor(hostTensorToFloat32(file.read(name)), file.tensors.get(name)!.shape);
  } finally {
    file.close();
  }
  for (let layer = 0; layer < config.num_hidden_layers; layer++) {
    for (const module of MODULES) {
      const name = `model.layers.${layer}.${module}`;
      const [rows, cols] = weights[`${name}.weight`].shape;
      const a = random.floats(RANK * cols, 0.3);
      const b = random.floats(rows * RANK, 0.3);
      lora[`base_model.model.${name}.lora_A.weight`] = float32Tensor(a, [RANK, cols]);
      lora[`base_model.model.${name}.lora_B.weight`] = float32Tensor(b, [rows, RANK]);
      const w = hostTensorToFloat32(weights[`${name}.weight`]).slice();
      for (let r = 0; r < rows; r++) {
        for (let c = 0; c < cols; c++) {
          let delta = 0;
          for (let k = 0; k < RANK; k++) delta += b[r * RANK + k] * a[k * cols + c];
          w[r * cols + c] += (ALPHA / RANK) * delta;
        }
      }
      weights[`${name}.weight`] = float32Tensor(w, [rows, cols]);
    }
  }
  const adapter = join(dir, 'adapter');
  const merged = join(dir, 'merged');
  mkdirSync(adapter);
  mkdirSync(merged);
  const targets = [...new Set(MODULES.map((m) => m.split('.')[1]))];
  writeFileSync(join(adapter, 'adapter_config.json'), JSON.stringify({ peft_type: 'LORA', r: RANK, lora_alpha: ALPHA, target_modules: targets, use_rslora: false, use_dora: false }));
  writeSafetensors(join(adapter, 'adapter_model.safetensors'), lora);
  // float32, so that the merged weights are not rounded to the fixture's bf16.
  writeFileSync(join(merged, 'config.json'), JSON.stringify({ ...config, dtype: 'float32' }));
  copyFileSync(join(BASE, 'generation_config.json'), join(merged, 'generation_config.json'));
  writeSafetensors(join(merged, 'model.safetensors'), weights);
  return { adapter, merged };
}

async function generate(model: string, prompts: number[][], adapter?: string): Promise<RequestOutput[]> {
  const llm = await LLM.load({ model, backend: 'cpu', showProgress: false, numKvBlocks: 64, ...(adapter === undefined ? {} : { loraModules: [{ name: 'adapter', path: adapter }], maxLoraRank: RANK }) });
  try {
    return await llm.generate(prompts, { temperature: 0, ignoreEos: true, maxTokens: 8, logprobs: 5 }, adapter === undefined ? {} : { lora: 'adapter' });
  } finally {
    await llm.close();
  }
}

test("a LoRA adapter on GLM's q_proj, k_proj (interleaved partial RoPE) and fused gate_up_proj gives the merged checkpoint's tokens and logprobs", async (t) => {
  const { adapter, merged } = writeAdapterAndMerged(tempDir(t), new TestRandom(testSeed('lora-interleaved-rope')));
  const prompts: number[][] = JSON.parse(readFileSync(join(BASE, 'oracle.json'), 'utf8')).prompts;
  const [live, folded, base] = [await generate(BASE, prompts, adapter), await generate(merged, prompts), await generate(BASE, prompts)];
  let worst = 0;
  let moved = 0;
  live.forEach((output, i) => {
    const [a, b] = [output.outputs[0], folded[i].outputs[0]];
    assert.deepEqual(a.tokenIds, b.tokenIds, `prompt ${i}: the merged model's tokens`);
    a.logprobs!.forEach((position, p) => {
      assert.deepEqual(position.top.map((c) => c.tokenId), b.logprobs![p].top.map((c) => c.tokenId), `prompt ${i}, token ${p}: the same candidates`);
      position.top.forEach((c, k) => (worst = Math.max(worst, Math.abs(c.logprob - b.logprobs![p].top[k].logprob))));
    });
    moved = Math.max(moved, Math.abs(a.logprobs![0].sampled.logprob - base[i].outputs[0].logprobs![0].sampled.logprob));
  });
  assert.ok(worst <= 1e-3, `max |Δlogprob| ${worst} against the merged model`);
  assert.ok(moved > 0.05 || live.some((o, i) => o.outputs[0].tokenIds.join() !== base[i].outputs[0].tokenIds.join()), 'the adapter changes the base model\'s output');
});
