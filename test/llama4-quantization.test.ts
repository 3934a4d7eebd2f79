import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CpuBackend } from '../src/backend/cpu/cpu-backend.ts';
import { storedTensors, type Checkpoint } from '../src/checkpoint/checkpoint.ts';
import { openModelFiles } from '../src/checkpoint/model-files.ts';
import { quantizeAtLoad, quantizedCheckpoint } from '../src/checkpoint/quantization/quantized-checkpoint.ts';
import { loadModel } from '../src/engine/load-engine.ts';
import type { WeightUploader } from '../src/layers/parameters.ts';
import { loadWeights } from '../src/models/load-weights.ts';
import { createModel, openModelCheckpoint, readModelArchitecture, type ModelArchitecture } from '../src/models/registry.ts';
import { quantizeCheckpoint } from '../src/quantize/quantize-checkpoint.ts';
import { hostTensorToFloat32 } from '../src/tensor/host-dtype.ts';
import { float32Tensor } from '../src/tensor/host-ops.ts';
import type { HostTensor } from '../src/tensor/host-tensor.ts';
import { quantizeRoundToNearest, type LinearQuantization } from '../src/tensor/quantize-rtn.ts';
import { dequantizeWeight, type QuantizedWeight } from '../src/tensor/quantized-weight.ts';
import { tempDir } from './helpers/model-temp-dir.ts';
import { expertStackRecorder } from './helpers/model-recording-uploader.ts';
import { listOracleFixtures, maxAbsDiff, type OracleFixture } from './helpers/oracle-fixtures.ts';
import { promptLogits } from './helpers/prompt-logits.ts';

// Llama 4 moves the rows of its RoPE layers' q_proj and k_proj at load (interleaved pairs into
// rotate_half order) and holds its routed experts in fused tensors. Quantized, the rows move as
// codes, scales and zeros, and the fused experts quantize as stacks: the model must compute exactly
// what the checkpoint of the same round-to-nearest weights, dequantized in the Hub's layout, does.
// gpt-oss's fused (interleaved, biased) experts take the same path, and so do the q/k rows of the
// other models whose RoPE pairs interleaved dims (ERNIE 4.5; Cohere, its per-head norm weights
// permuted alike; GLM-4, over the rotary part of each head). Drift bounds as in test/moe-quantization.test.ts.
const DRIFT_BOUND = { int8: 0.5, fp8: 1, int4: 2 };
const FIXTURES = ['llama4-text', 'llama4-vl', 'gpt-oss', 'ernie4.5-interleaved-rope', 'cohere-qknorm', 'glm-partial-interleaved', 'glm4-sandwich-norms'];

function fixture(name: string): OracleFixture {
  const found = listOracleFixtures().find((f) => f.name === name);
  assert.ok(found, `fixture ${name} is present`);
  return found;
}

function checkpointOf(f: OracleFixture, architecture: ModelArchitecture): Checkpoint {
  return openModelCheckpoint(openModelFiles(f.dir), architecture);
}

/** The round-to-nearest weight [rows, cols], dequantized. */
function roundTrip(t: HostTensor, method: LinearQuantization): Float32Array {
  const [rows, cols] = t.shape;
  return dequantizeWeight(quantizeRoundToNearest(hostTensorToFloat32(t), rows, cols, method));
}

/** A fused expert tensor [E, in, out] with each expert's [out, in] matrix round-tripped. */
function roundTripFused(t: HostTensor, method: LinearQuantization): HostTensor {
  const [experts, cols, rows] = t.shape;
  const values = hostTensorToFloat32(t);
  const out = new Float32Array(values.length);
  for (let e = 0; e < experts; e++) {
    const at = e * rows * cols;
    const matrix = new Float32Array(rows * cols);
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) matrix[r * cols + c] = values[at + c * rows + r];
    const back = roundTrip(float32Tensor(matrix, [rows, cols]), method);
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[at + c * rows + r] = back[r * cols + c];
  }
  return float32Tensor(out, t.shape);
}

test('--quantization fp8|int8|int4 runs Llama 4, ERNIE 4.5, Cohere and GLM-4 quantized (q/k rows moved as codes, fused experts quantized), exactly as their round-to-nearest weights dequantized in the Hub\'s layout', async () => {
  for (const name of FIXTURES) {
    const f = fixture(name);
    const architecture = readModelArchitecture(f.dir);
    for (const method of ['fp8', 'int8', 'int4'] as const) {
      const what = `${name}, ${method}`;
      const model = createModel(architecture, architecture.config.contextLength);
      const backend = new CpuBackend();
      let [matrices, expertStacks] = [0, 0];
      const uploader: WeightUploader = {
        loadWeight: backend.loadWeight.bind(backend),
        loadSparseWeight: backend.loadSparseWeight.bind(backend),
        loadMxfp4Weight: backend.loadMxfp4Weight.bind(backend),
        uploadRopeTable: backend.uploadRopeTable.bind(backend),
        loadQuantizedWeight: (w) => (matrices++, backend.loadQuantizedWeight(w)),
        loadQuantizedExperts: (w, count) => (expertStacks++, backend.loadQuantizedExperts(w, count)),
      };
      const quantized = quantizeAtLoad(checkpointOf(f, architecture), method);
      const linears = new Set<string>();
      const readLinear = quantized.readLinear!.bind(quantized);
      quantized.readLinear = (tensor) => (linears.add(tensor), readLinear(tensor));
      loadWeights(model, quantized, uploader);
      const actual = promptLogits(backend, model, f);

      const layers = architecture.config.numLayers;
      for (let i = 0; i < layers; i++) for (const p of ['q', 'k']) assert.ok(linears.has(`model.layers.${i}.self_attn.${p}_proj.weight`), `${what}: layer ${i}'s ${p}_proj quantized`);
      const fused = new Set(model.parameters().filter((p) => p.access?.kind === 'expert' && p.shape.length === 3).map((p) => p.name));
      assert.equal(expertStacks, fused.size, `${what}: gate/up and down of every MoE layer quantized`);
      assert.ok(matrices >= 2 * layers, `${what}: the attention projections (q/k/v, o) quantized`);

      // The same weights dequantized, read 16-bit in the checkpoint's own layout (rows moved as floats).
      const plain = checkpointOf(f, architecture);
      const dequantized = Object.assign(storedTensors(plain), {
        read: (tensor: string): HostTensor => {
          const t = plain.read(tensor);
          if (linears.has(tensor)) return float32Tensor(roundTrip(t, method), t.shape);
          return fused.has(tensor) ? roundTripFused(t, method) : t;
        },
      });
      const reference = createModel(architecture, architecture.config.contextLength);
      const referenceBackend = new CpuBackend();
      loadWeights(reference, dequantized, referenceBackend);
      const expected = promptLogits(referenceBackend, reference, f);
      actual.forEach((row, i) => assert.ok(maxAbsDiff(row, expected[i]) < 1e-4, `${what}: prompt ${i}: max |Δlogit| ${maxAbsDiff(row, expected[i])} from the dequantized model`));

      // The engine's own path (--quantization) gives the same logits.
      const loaded = await loadModel({ model: f.dir, backend: 'cpu', quantization: method, showProgress: false });
      promptLogits(loaded.backend, loaded.model, f).forEach((row, i) => assert.deepEqual(row, actual[i], `${what}: prompt ${i}, loadModel`));
      const drift = Math.max(...actual.map((row, i) => maxAbsDiff(row, f.oracle.last_logits[i])));
      console.log(`${what}: max |Δlogit| from the 16-bit model ${drift.toFixed(3)}`);
      assert.ok(drift > 0 && drift < DRIFT_BOUND[method], `${what}: max |Δlogit| from the 16-bit model ${drift}`);
    }
  }
});

test('a GPTQ checkpoint of Llama 4 (keel quantize --method rtn) runs its q/k codes moved into rotate_half order, exactly as its dequantized weights', (t) => {
  const f = fixture('llama4-text');
  const output = tempDir(t);
  quantizeCheckpoint({ model: f.dir, method: 'rtn', bits: 4, groupSize: 32, actOrder: false, samples: [], output });
  const architecture = readModelArchitecture(output);
  assert.equal(architecture.quantization?.method, 'gptq');
  const run = (source: Checkpoint) => {
    const model = createModel(architecture, architecture.config.contextLength);
    const backend = new CpuBackend();
    let matrices = 0;
    loadWeights(model, source, { ...backend, loadWeight: backend.loadWeight.bind(backend), loadSparseWeight: backend.loadSparseWeight.bind(backend), loadMxfp4Weight: backend.loadMxfp4Weight.bind(backend), uploadRopeTable: backend.uploadRopeTable.bind(backend), loadQuantizedExperts: backend.loadQuantizedExperts.bind(backend), loadQuantizedWeight: (w) => (matrices++, backend.loadQuantizedWeight(w)) });
    return { logits: promptLogits(backend, model, f), matrices };
  };
  const open = () => quantizedCheckpoint(openModelCheckpoint(openModelFiles(output), architecture), architecture.quantization!);
  const source = open();
  const linears = new Set<string>();
  const readLinear = source.readLinear!.bind(source);
  source.readLinear = (tensor) => (linears.add(tensor), readLinear(tensor));
  const quantized = run(source);
  for (let i = 0; i < architecture.config.numLayers; i++) for (const p of ['q', 'k']) assert.ok(linears.has(`model.layers.${i}.self_attn.${p}_proj.weight`), `layer ${i}'s ${p}_proj read quantized`);
  // `read` gives a quantized layer's dequantized values: without readLinear every layer runs them 16-bit.
  const expected = run(storedTensors(open()));
  assert.ok(quantized.matrices >= 2 * architecture.config.numLayers, "the attention projections (q/k/v, o) run quantized");
  assert.equal(expected.matrices, 0);
  quantized.logits.forEach((row, i) => assert.ok(maxAbsDiff(row, expected.logits[i]) < 1e-4, `prompt ${i}: max |Δlogit| ${maxAbsDiff(row, expected.logits[i])}`));
  const drift = Math.max(...quantized.logits.map((row, i) => maxAbsDiff(row, f.oracle.last_logits[i])));
  assert.ok(drift > 0 && drift < DRIFT_BOUND.int4, `max |Δlogit| from the 16-bit model ${drift}`);
});

test('a compressed-tensors checkpoint of Llama 4 with its experts written per expert (as llm-compressor writes them) loads them quantized, stacked, and its q/k rows moved as codes', () => {
  const f = fixture('quant-llama4-text-ct-w4a16');
  const architecture = readModelArchitecture(f.dir);
  const model = createModel(architecture, architecture.config.contextLength);
  const backend = new CpuBackend();
  const { uploader, stacks } = expertStackRecorder(backend);
  const source = quantizedCheckpoint(openModelCheckpoint(openModelFiles(f.dir), architecture), architecture.quantization!);
  const linears = new Set<string>();
  const readLinear = source.readLinear!.bind(source);
  source.readLinear = (tensor) => (linears.add(tensor), readLinear(tensor));
  loadWeights(model, source, uploader);
  const layers = architecture.config.numLayers;
  for (let i = 0; i < layers; i++) for (const p of ['q', 'k']) assert.ok(linears.has(`model.layers.${i}.self_attn.${p}_proj.weight`), `layer ${i}'s ${p}_proj read quantized`);
  // Every layer MoE: 4 experts 32 wide, hidden 64, groups of 32.
  const perLayer = [['int4', 4 * 2 * 32, 64, 32], ['int4', 4 * 64, 32, 32]];
  assert.deepEqual(stacks.map((w) => [w.format, w.rows, w.cols, w.groupSize]), Array.from({ length: layers }, () => perLayer).flat());
});
