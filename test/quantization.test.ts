import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { CpuBackend } from '../src/backend/cpu/cpu-backend.ts';
import { openCheckpoint } from '../src/checkpoint/checkpoint.ts';
import { quantizeAtLoad } from '../src/checkpoint/quantization/quantized-checkpoint.ts';
import { engineConfigFromFlags } from '../src/cli/engine-flags.ts';
import { DEFAULT_MODEL_DIR, loadModel } from '../src/engine/load-engine.ts';
import { loadWeights } from '../src/models/load-weights.ts';
import { createModel, readModelArchitecture } from '../src/models/registry.ts';
import { float32Tensor } from '../src/tensor/host-ops.ts';
import { DUMMY_ONLY_QUANTIZATIONS, LINEAR_QUANTIZATIONS } from '../src/tensor/quantize-rtn.ts';
import { LLM } from '../src/engine/llm.ts';
import { dequantizeMxfp4, type Mxfp4Weight } from '../src/tensor/mxfp4.ts';
import { dequantizeWeight, isQuantized } from '../src/tensor/quantized-weight.ts';
import { FIXTURES_DIR, listOracleFixtures, maxAbsDiff } from './helpers/oracle-fixtures.ts';
import { promptLogits } from './helpers/prompt-logits.ts';

const DRIFT_BOUND = { int8: 0.15, fp8: 0.6, int4: 1.5, nf4: 1.5, 'llm-int8': 0.3 };
const FIXTURE = listOracleFixtures().find((f) => f.name === 'llama-gqa')!;

test('--quantization multiplies by the quantized weights exactly as by their dequantized values, and stays near the 16-bit logits', async () => {
  // llm-int8 quantizes the activations too (its own tests: src/backend/cpu/ops/llm-int8-matmul.test.ts, test/llm-int8.test.ts).
  for (const method of LINEAR_QUANTIZATIONS.filter((m) => m !== 'llm-int8')) {
    const quantized = await loadModel({ model: FIXTURE.dir, backend: 'cpu', quantization: method, showProgress: false });
    const actual = promptLogits(quantized.backend, quantized.model, FIXTURE);
    // The same weights, dequantized on the host and loaded as float32 matrices.
    const architecture = readModelArchitecture(FIXTURE.dir);
    const dense = createModel(architecture, architecture.config.contextLength);
    const backend = new CpuBackend();
    const ckpt = quantizeAtLoad(openCheckpoint(FIXTURE.dir), method);
    const readLinear = (name: string) => {
      const w = ckpt.readLinear!(name);
      return isQuantized(w) ? float32Tensor(dequantizeWeight(w), [w.rows, w.cols]) : w;
    };
    loadWeights(dense, { ...ckpt, readLinear }, backend);
    const expected = promptLogits(backend, dense, FIXTURE);
    actual.forEach((row, i) => assert.deepEqual(row, expected[i], `${method}: prompt ${i}`));
    const drift = Math.max(...actual.map((row, i) => maxAbsDiff(row, FIXTURE.oracle.last_logits[i])));
    // Loose bounds by each format's precision (logits here span about ±2): the quantization happened and did not break the model.
    assert.ok(drift > 0 && drift < DRIFT_BOUND[method], `${method}: max |Δlogit| from the 16-bit model ${drift}`);
  }
});

test('--quantization llm-int8 keeps int8 weights with LLM.int8() outlier columns at 6, near the 16-bit logits', async () => {
  const quantized = await loadModel({ model: FIXTURE.dir, backend: 'cpu', quantization: 'llm-int8', showProgress: false });
  const ckpt = quantizeAtLoad(openCheckpoint(FIXTURE.dir), 'llm-int8');
  const w = ckpt.readLinear!('model.layers.0.mlp.down_proj.weight');
  assert.ok(isQuantized(w) && w.format === 'int8' && w.mixedInt8?.threshold === 6);
  const drift = Math.max(...promptLogits(quantized.backend, quantized.model, FIXTURE).map((row, i) => maxAbsDiff(row, FIXTURE.oracle.last_logits[i])));
  assert.ok(drift > 0 && drift < DRIFT_BOUND['llm-int8'], `llm-int8: max |Δlogit| from the 16-bit model ${drift}`);
});

test('--quantization on a checkpoint that is already quantized is refused, naming its method', async () => {
  await assert.rejects(
    loadModel({ model: join(FIXTURES_DIR, 'quant-awq-int4'), backend: 'cpu', quantization: 'int8', showProgress: false }),
    /--quantization int8: .*quant-awq-int4 is already quantized \(quant_method awq\); Keel reads it as it is/,
  );
});

test('--quantization mxfp4 packs the routed experts, which multiply exactly as their dequantized values, near the 16-bit logits', async () => {
  const fixture = listOracleFixtures().find((f) => f.name === 'gpt-oss')!;
  const quantized = await loadModel({ model: fixture.dir, backend: 'cpu', quantization: 'mxfp4', showProgress: false });
  const actual = promptLogits(quantized.backend, quantized.model, fixture);
  // The same experts dequantized on the host: a backend whose MXFP4 upload keeps the decoded values as float32.
  const architecture = readModelArchitecture(fixture.dir);
  const dense = createModel(architecture, architecture.config.contextLength);
  const backend = new CpuBackend();
  let packed = 0;
  const uploader = {
    loadWeight: backend.loadWeight.bind(backend),
    loadQuantizedWeight: backend.loadQuantizedWeight.bind(backend),
    loadSparseWeight: backend.loadSparseWeight.bind(backend),
    loadQuantizedExperts: backend.loadQuantizedExperts.bind(backend),
    uploadRopeTable: backend.uploadRopeTable.bind(backend),
    loadMxfp4Weight: (w: Mxfp4Weight) => {
      packed++;
      return backend.loadWeight(float32Tensor(dequantizeMxfp4(w), w.shape));
    },
  };
  loadWeights(dense, quantizeAtLoad(openCheckpoint(fixture.dir), 'mxfp4'), uploader);
  assert.equal(packed, 2 * architecture.config.numLayers, 'gate/up and down of every layer');
  const expected = promptLogits(backend, dense, fixture);
  actual.forEach((row, i) => assert.deepEqual(row, expected[i], `prompt ${i}`));
  const drift = Math.max(...actual.map((row, i) => maxAbsDiff(row, fixture.oracle.last_logits[i])));
  assert.ok(drift > 0 && drift < 1.5, `max |Δlogit| from the 16-bit model ${drift}`);
});

test('--quantization mxfp4 on a model without routed experts is refused, naming the alternatives', async () => {
  await assert.rejects(loadModel({ model: FIXTURE.dir, backend: 'cpu', quantization: 'mxfp4', showProgress: false }), /--quantization mxfp4 quantizes routed MoE experts, and .*llama-gqa has none; use fp8, int8, int4, nf4 or llm-int8/);
});

test('--quantization takes fp8, int8, int4, mxfp4, nf4, llm-int8 or (dummy weights) aqlm-2x8 / aqlm-1x16, and the library option likewise', async () => {
  assert.equal(engineConfigFromFlags({ quantization: 'int4' }).quantization, 'int4');
  assert.equal(engineConfigFromFlags({ quantization: 'mxfp4' }).quantization, 'mxfp4');
  assert.equal(engineConfigFromFlags({ quantization: 'nf4' }).quantization, 'nf4');
  assert.equal(engineConfigFromFlags({ quantization: 'aqlm-1x16' }).quantization, 'aqlm-1x16');
  assert.throws(() => engineConfigFromFlags({ quantization: 'int3' }), /--quantization must be one of fp8, int8, int4, mxfp4, nf4, llm-int8, aqlm-2x8, aqlm-1x16 \(got "int3"\)/);
  await assert.rejects(loadModel({ model: FIXTURE.dir, backend: 'cpu', quantization: 'int3' as 'int4', showProgress: false }), /quantization must be one of fp8, int8, int4, mxfp4, nf4, llm-int8, aqlm-2x8, aqlm-1x16 or null \(got "int3"\)/);
});

test('dummy weights are quantized by --quantization too', async () => {
  const loaded = await loadModel({ model: FIXTURE.dir, backend: 'cpu', loadFormat: 'dummy', quantization: 'int4', showProgress: false });
  const logits = promptLogits(loaded.backend, loaded.model, FIXTURE);
  assert.ok(logits.every((row) => row.every(Number.isFinite)));
  await assert.rejects(loadModel({ model: join(FIXTURES_DIR, 'quant-fp8-block'), backend: 'cpu', loadFormat: 'dummy', showProgress: false }), /--load-format dummy makes 16-bit weights, not fp8 ones/);
});

test('keel-tiny with dummy AQLM weights (2x8 and 1x16) generates; a real checkpoint with --quantization aqlm-* is refused', async () => {
  for (const quantization of DUMMY_ONLY_QUANTIZATIONS) {
    const llm = await LLM.load({ loadFormat: 'dummy', quantization, backend: 'cpu', showProgress: false, numKvBlocks: 16 });
    const [output] = await llm.generate([[1, 2, 3, 4]], { temperature: 0, maxTokens: 4, ignoreEos: true });
    assert.equal(output.outputs[0].tokenIds.length, 4, quantization);
    await llm.close();
  }
  await assert.rejects(
    loadModel({ model: DEFAULT_MODEL_DIR, backend: 'cpu', quantization: 'aqlm-2x8', showProgress: false }),
    /--quantization aqlm-2x8 makes random AQLM weights for --load-format dummy only: quantize .*keel-tiny with `keel quantize --method vq --codebooks 2x8`/,
  );
});
