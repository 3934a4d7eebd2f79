import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { writeRandomLoraAdapter } from '../src/bench/random-lora.ts';
import { LLM } from '../src/engine/llm.ts';
import { createModel, readModelArchitecture } from '../src/models/registry.ts';
import { MIXED_LONG_PROMPT, MIXED_PROMPTS, mixedGguf } from './helpers/mixed-format-gguf.ts';
import { tempDir } from './helpers/model-temp-dir.ts';
import { assertGreedyUpToNearTie } from './helpers/near-tie.ts';
import { assertCudaLogitsNearCpu } from './helpers/prompt-logits.ts';

// A GGUF file whose q/k/v and gate/up parts are in different types (Q4_K q/k beside a Q6_K v, ...:
// test/helpers/mixed-format-gguf.ts) on CUDA: each run of one format through the quantized kernels,
// the outputs joined into the stacked columns, against the CPU backend (bit-identical there to the
// dequantized model: test/mixed-format-linears.test.ts).

/** Decode-sized (GEMV), prefill within the tensor-core GEMM's rows, and past them (dequantized + cuBLAS). */
const BATCHES = {
  'one token each': [[5], [9], [40]],
  prompts: MIXED_PROMPTS,
  'a 160-token prompt': [MIXED_LONG_PROMPT],
};

test('a GGUF file with mixed-format q/k/v and gate/up gives the CPU backend\'s logits on CUDA within bf16 allowances (GEMV, GEMM and dequantized paths)', async (t) => {
  const { gguf } = mixedGguf(t);
  for (const [what, prompts] of Object.entries(BATCHES)) await assertCudaLogitsNearCpu({ model: gguf }, prompts, what);
});

test('greedy generation from the mixed GGUF file on CUDA, with and without a LoRA adapter, keeps the CPU backend\'s tokens up to bf16 near-ties', async (t) => {
  const { gguf, dequantized } = mixedGguf(t);
  const adapter = join(tempDir(t, 'keel-mixed-lora-'), 'adapter');
  mkdirSync(adapter);
  const architecture = readModelArchitecture(dequantized);
  writeRandomLoraAdapter(adapter, createModel(architecture, architecture.config.contextLength).loraTargets?.() ?? [], 4, 11);
  const params = { temperature: 0, ignoreEos: true, maxTokens: 12, logprobs: 2 };
  const run = async (backend: 'cpu' | 'cuda') => {
    const llm = await LLM.load({ model: gguf, backend, showProgress: false, numKvBlocks: 32, loraModules: [{ name: 'random', path: adapter }], maxLoraRank: 4 });
    try {
      return { base: await llm.generate(MIXED_PROMPTS, params), adapted: await llm.generate(MIXED_PROMPTS, params, { lora: 'random' }) };
    } finally {
      await llm.close();
    }
  };
  const [cpu, cuda] = [await run('cpu'), await run('cuda')];
  assertGreedyUpToNearTie(cuda.base, cpu.base.map((o) => o.outputs[0]), 'base: ');
  assertGreedyUpToNearTie(cuda.adapted, cpu.adapted.map((o) => o.outputs[0]), 'adapted: ');
});
