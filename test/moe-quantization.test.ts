import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { CpuBackend } from '../src/backend/cpu/cpu-backend.ts';
import { openCheckpoint } from '../src/checkpoint/checkpoint.ts';
import { parseQuantizationConfig } from '../src/checkpoint/quantization/quantization-config.ts';
import { quantizeAtLoad } from '../src/checkpoint/quantization/quantized-checkpoint.ts';
import { LLM } from '../src/engine/llm.ts';
import { loadModel } from '../src/engine/load-engine.ts';
import type { WeightUploader } from '../src/layers/parameters.ts';
import { loadWeights } from '../src/models/load-weights.ts';
import { withQuantization } from '../src/models/model-checkpoint.ts';
import { createModel, readModelArchitecture } from '../src/models/registry.ts';
import { float32Tensor } from '../src/tensor/host-ops.ts';
import { dequantizeWeight, type QuantizedWeight } from '../src/tensor/quantized-weight.ts';
import { expertStackRecorder } from './helpers/model-recording-uploader.ts';
import { listOracleFixtures, maxAbsDiff } from './helpers/oracle-fixtures.ts';
import { promptLogits } from './helpers/prompt-logits.ts';

// --quantization on MoE models quantizes the routed experts too (with the shared experts and the
// other linear layers): the model must compute exactly what it computes on the dequantized
// weights, and stay near the 16-bit logits. Bounds are loose by each format's precision (the
// fixtures' logits span about ±2), and looser than the dense model's (test/quantization.test.ts):
// quantized attention and shared experts move the router's input, which can flip a near-tied
// expert choice (measured: int8 0.04-0.07 on four fixtures, 0.35 on qwen3-moe).
const DRIFT_BOUND = { int8: 0.5, fp8: 1, int4: 2 };
const MOE_FIXTURES = ['mixtral-moe', 'qwen2-moe', 'qwen3-moe', 'deepseek-v2-lite', 'deepseek-v3'];

test('--quantization fp8|int8|int4 keeps MoE experts quantized, computing exactly what their dequantized values do, near the 16-bit logits', async () => {
  const fixtures = listOracleFixtures().filter((f) => MOE_FIXTURES.includes(f.name));
  assert.equal(fixtures.length, MOE_FIXTURES.length, 'every MoE fixture is present');
  for (const fixture of fixtures) {
    for (const method of ['fp8', 'int8', 'int4'] as const) {
      const what = `${fixture.name}, ${method}`;
      const quantized = await loadModel({ model: fixture.dir, backend: 'cpu', quantization: method, showProgress: false });
      const actual = promptLogits(quantized.backend, quantized.model, fixture);
      // The same checkpoint on a backend that keeps every quantized upload as its dequantized float32 values.
      const architecture = readModelArchitecture(fixture.dir);
      const dense = createModel(architecture, architecture.config.contextLength);
      const backend = new CpuBackend();
      const values = (w: QuantizedWeight, shape: number[]) => backend.loadWeight(float32Tensor(dequantizeWeight(w), shape));
      let expertStacks = 0;
      const uploader: WeightUploader = {
        loadWeight: backend.loadWeight.bind(backend),
        loadSparseWeight: backend.loadSparseWeight.bind(backend),
        loadMxfp4Weight: backend.loadMxfp4Weight.bind(backend),
        uploadRopeTable: backend.uploadRopeTable.bind(backend),
        loadQuantizedWeight: (w) => values(w, [w.rows, w.cols]),
        loadQuantizedExperts: (w, count) => {
          expertStacks++;
          return values(w, [count, w.rows / count, w.cols]);
        },
      };
      loadWeights(dense, quantizeAtLoad(openCheckpoint(fixture.dir), method), uploader);
      const sparseLayers = dense.parameters().filter((p) => /experts\.0\.(w1|gate_proj)\.weight$/.test(p.name)).length;
      assert.ok(sparseLayers > 0, `${what}: the model has routed experts`);
      assert.equal(expertStacks, 2 * sparseLayers, `${what}: gate/up and down of every sparse layer quantized`);
      const expected = promptLogits(backend, dense, fixture);
      actual.forEach((row, i) => assert.deepEqual(row, expected[i], `${what}: prompt ${i}`));
      const drift = Math.max(...actual.map((row, i) => maxAbsDiff(row, fixture.oracle.last_logits[i])));
      console.log(`${what}: max |Δlogit| from the 16-bit model ${drift.toFixed(3)}`);
      assert.ok(drift > 0 && drift < DRIFT_BOUND[method], `${what}: max |Δlogit| from the 16-bit model ${drift}`);
    }
  }
});

test('dummy weights of an MoE model are drawn with quantized experts under --quantization, and run', async () => {
  const fixture = listOracleFixtures().find((f) => f.name === 'qwen3-moe')!;
  for (const method of ['fp8', 'int4'] as const) {
    const loaded = await loadModel({ model: fixture.dir, backend: 'cpu', loadFormat: 'dummy', quantization: method, showProgress: false });
    const logits = promptLogits(loaded.backend, loaded.model, fixture);
    assert.ok(logits.every((row) => row.every(Number.isFinite)), method);
  }
});

test('quantized MoE checkpoints (GPTQ int4, fp8 128x128-style blocks, Mixtral\'s W4A16 and act-order GPTQ) load their routed experts quantized, in the checkpoint\'s groups', () => {
  // Two sparse layers each (qwen3-moe's 0 and 2, Mixtral's block_sparse_moe.experts.E.w1/w3/w2 in 0 and 1), hidden 64:
  // gate/up [experts x 2n, 64] then down [experts x 64, n]; act-order stacks keep a column order per expert.
  const expected = {
    'quant-moe-gptq-int4-sym': { format: 'int4', groups: [32, 32], experts: 8, n: 32, actOrder: false },
    'quant-moe-fp8-block': { format: 'fp8-e4m3', groups: [48, 32], experts: 8, n: 32, actOrder: false },
    'quant-moe-mixtral-ct-w4a16': { format: 'int4', groups: [32, 32], experts: 4, n: 32, actOrder: false },
    'quant-moe-mixtral-gptq-int4-actorder': { format: 'int4', groups: [32, 32], experts: 4, n: 64, actOrder: true },
  };
  for (const [name, want] of Object.entries(expected)) {
    const fixture = listOracleFixtures().find((f) => f.name === name)!;
    const architecture = readModelArchitecture(fixture.dir);
    const model = createModel(architecture, architecture.config.contextLength);
    const backend = new CpuBackend();
    const { uploader, stacks } = expertStackRecorder(backend);
    const ckpt = openCheckpoint(fixture.dir);
    loadWeights(model, withQuantization(ckpt, parseQuantizationConfig(JSON.parse(readFileSync(join(fixture.dir, 'config.json'), 'utf8')), fixture.dir), null), uploader);
    const { experts, n, actOrder } = want;
    const perLayer = [
      [want.format, experts * 2 * n, 64, want.groups[0], actOrder ? experts * 64 : 0],
      [want.format, experts * 64, n, want.groups[1], actOrder ? experts * n : 0],
    ];
    assert.deepEqual(stacks.map((w) => [w.format, w.rows, w.cols, w.groupSize, w.perm?.length ?? 0]), [...perLayer, ...perLayer], name);
  }
});

test('a quantized MoE checkpoint with every decoder layer streamed from host memory gives transformers\' greedy tokens', async () => {
  const fixture = listOracleFixtures().find((f) => f.name === 'quant-moe-gptq-int4-sym')!;
  const llm = await LLM.load({ model: fixture.dir, backend: 'cpu', showProgress: false, cpuOffloadGb: 1 });
  try {
    const outputs = await llm.generate(fixture.oracle.prompts, { temperature: 0, ignoreEos: true, maxTokens: fixture.oracle.max_new_tokens });
    outputs.forEach((out, i) => assert.deepEqual(out.outputs[0].tokenIds, fixture.oracle.greedy[i], `prompt ${i}`));
  } finally {
    await llm.close();
  }
});
