import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { CpuBackend } from '../src/backend/cpu/cpu-backend.ts';
import { writeRandomLoraAdapter } from '../src/bench/random-lora.ts';
import { openCheckpoint, type Checkpoint } from '../src/checkpoint/checkpoint.ts';
import { writeSafetensorsFile, type SafetensorsTensor } from '../src/checkpoint/safetensors-writer.ts';
import { openModelFiles } from '../src/checkpoint/model-files.ts';
import { loadModel } from '../src/engine/load-engine.ts';
import { LLM } from '../src/engine/llm.ts';
import type { WeightUploader } from '../src/layers/parameters.ts';
import type { CausalLM } from '../src/models/causal-lm.ts';
import { withLinearsDequantized, withQuantization } from '../src/models/model-checkpoint.ts';
import { loadWeights } from '../src/models/load-weights.ts';
import { createModel, readModelArchitecture } from '../src/models/registry.ts';
import { float32Tensor } from '../src/tensor/host-ops.ts';
import { dequantizeWeight, isQuantized, type QuantizedWeight } from '../src/tensor/quantized-weight.ts';
import { withBf16Activations } from './helpers/bf16-activations.ts';
import { KV_ROWS, MIXED_CONFIG, MIXED_LONG_PROMPT, MIXED_PROMPTS, mixedGguf, Q_ROWS } from './helpers/mixed-format-gguf.ts';
import { tempDir } from './helpers/model-temp-dir.ts';
import { ggufFromCheckpoint } from './helpers/gguf-from-checkpoint.ts';
import { FIXTURES_DIR, maxAbsDiff } from './helpers/oracle-fixtures.ts';
import { lastTokenLogits } from './helpers/prompt-logits.ts';

/*
 * Stacked projections (q/k/v, gate/up) whose parts a checkpoint holds in different quantized
 * formats keep each part's format: every run of consecutive parts in one format is one matmul,
 * their outputs joined into the stacked columns. On the CPU backend that is bit-identical to the
 * model with every weight dequantized.
 */

/** A weight uploaded to the backend: its format ('16-bit' for loadWeight), rows, columns, and columns a scale group. */
interface Upload {
  format: string;
  rows: number;
  cols: number;
  groupSize: number;
}

const int4 = (rows: number) => ({ format: 'int4', rows, groupSize: 32 });
const int8 = (rows: number, groupSize: number) => ({ format: 'int8', rows, groupSize });
const bits16 = (rows: number) => ({ format: '16-bit', rows, groupSize: 0 });
/** What the mixed GGUF file's linear layers must upload, in load order: one entry per matmul. */
const EXPECTED_UPLOADS = [
  [int4(Q_ROWS + KV_ROWS), int8(KV_ROWS, 16)], // q|k Q4_K, v Q6_K
  [int4(256)], // o
  [int4(256), int8(256, 32)], // gate Q4_K, up Q8_0
  [int8(256, 16)], // down
  [int8(Q_ROWS, 32), bits16(KV_ROWS), int8(KV_ROWS, 32)], // q Q8_0, k F16, v Q8_0
  [int8(256, 32)], // o
  [int8(512, 16)], // gate|up Q6_K
  [int4(256)], // down
].flat();

/** Loads `model` from `ckpt` on a CPU backend, recording the format of every 2-D weight uploaded. */
function loadRecorded(model: CausalLM, ckpt: Checkpoint): { backend: CpuBackend; uploads: Upload[] } {
  const backend = new CpuBackend();
  const uploads: Upload[] = [];
  const uploader: WeightUploader = {
    loadWeight: (t, options) => {
      if (t.shape.length === 2) uploads.push({ format: '16-bit', rows: t.shape[0], cols: t.shape[1], groupSize: 0 });
      return backend.loadWeight(t, options);
    },
    loadQuantizedWeight: (w: QuantizedWeight) => {
      uploads.push({ format: w.format, rows: w.rows, cols: w.cols, groupSize: w.groupSize });
      return backend.loadQuantizedWeight(w);
    },
    loadSparseWeight: (w) => backend.loadSparseWeight(w),
    loadMxfp4Weight: (w) => backend.loadMxfp4Weight(w),
    loadQuantizedExperts: (w, count) => backend.loadQuantizedExperts(w, count),
    uploadRopeTable: (table) => backend.uploadRopeTable(table),
  };
  loadWeights(model, ckpt, uploader);
  return { backend, uploads };
}

test('q/k/v and gate/up parts a GGUF file holds in Q4_K, Q6_K, Q8_0 and F16 load in their own formats, one matmul per run of one format', (t) => {
  const { gguf } = mixedGguf(t);
  const architecture = readModelArchitecture(gguf);
  const model = createModel(architecture, architecture.config.contextLength);
  const ckpt = openModelFiles(gguf).openCheckpoint();
  try {
    const { uploads } = loadRecorded(model, ckpt);
    // Only the embedding and the LM head ([64, 256], F32 in the file) and layer 1's F16 k_proj are 16-bit.
    const linears = uploads.filter((u) => !(u.format === '16-bit' && u.rows === MIXED_CONFIG.vocab_size));
    assert.deepEqual(linears, EXPECTED_UPLOADS.map((u) => ({ ...u, cols: 256 })));
  } finally {
    ckpt.close();
  }
});

test('a model with mixed-format q/k/v and gate/up gives, bit for bit, the logits of the same model with its weights dequantized', async (t) => {
  const { gguf, dequantized } = mixedGguf(t);
  const mixed = await loadModel({ model: gguf, backend: 'cpu', showProgress: false });
  const dense = await loadModel({ model: dequantized, backend: 'cpu', showProgress: false });
  const [actual, expected] = [lastTokenLogits(mixed.backend, mixed.model, MIXED_PROMPTS), lastTokenLogits(dense.backend, dense.model, MIXED_PROMPTS)];
  actual.forEach((row, i) => assert.deepEqual(row, expected[i], `prompt ${i}`));
});

test('the mixed model\'s logits hold under bf16 activations well inside the CUDA test\'s allowance (mixed-format-linears.gpu.test.ts), so that test checks the kernels, not bf16', async (t) => {
  const { gguf } = mixedGguf(t);
  const exact = await loadModel({ model: gguf, backend: 'cpu', showProgress: false });
  const rounded = await loadModel({ model: gguf, backend: 'cpu', showProgress: false });
  for (const prompts of [MIXED_PROMPTS, [MIXED_LONG_PROMPT]]) {
    const want = lastTokenLogits(exact.backend, exact.model, prompts);
    const got = lastTokenLogits(withBf16Activations(rounded.backend as CpuBackend), rounded.model, prompts);
    want.forEach((row, i) => {
      const mean = row.reduce((a, b) => a + b, 0) / row.length;
      const deviation = Math.sqrt(row.reduce((a, b) => a + (b - mean) ** 2, 0) / row.length);
      // A third of the GPU test's 0.125 · deviation: room for the kernels' own roundings.
      const diff = maxAbsDiff(got[i], row);
      assert.ok(diff <= 0.125 * deviation / 3, `${prompts[i].length}-token prompt ${i}: max |Δlogit| ${diff} under bf16 activations vs deviation ${deviation}`);
    });
  }
});

test('greedy generation from the mixed GGUF file equals the dequantized safetensors run, with and without a LoRA adapter on every projection', async (t) => {
  const { gguf, dequantized } = mixedGguf(t);
  const adapter = join(tempDir(t, 'keel-mixed-lora-'), 'adapter');
  mkdirSync(adapter);
  const architecture = readModelArchitecture(dequantized);
  writeRandomLoraAdapter(adapter, createModel(architecture, architecture.config.contextLength).loraTargets?.() ?? [], 4, 11);
  const params = { temperature: 0, ignoreEos: true, maxTokens: 12, logprobs: 3 };
  const run = async (model: string) => {
    const llm = await LLM.load({ model, backend: 'cpu', showProgress: false, numKvBlocks: 32, loraModules: [{ name: 'random', path: adapter }], maxLoraRank: 4 });
    try {
      const outputs = async (lora?: string) => (await llm.generate(MIXED_PROMPTS, params, lora === undefined ? {} : { lora })).map((o) => o.outputs[0]);
      return { base: await outputs(), adapted: await outputs('random') };
    } finally {
      await llm.close();
    }
  };
  const [fromGguf, fromDequantized] = [await run(gguf), await run(dequantized)];
  for (const which of ['base', 'adapted'] as const) {
    assert.deepEqual(fromGguf[which].map((o) => o.tokenIds), fromDequantized[which].map((o) => o.tokenIds), `${which}: tokens`);
    assert.deepEqual(fromGguf[which].map((o) => o.logprobs), fromDequantized[which].map((o) => o.logprobs), `${which}: logprobs`);
  }
  // The adapter changed what the model computes, so the adapted runs compared something.
  assert.notDeepEqual(fromGguf.adapted.map((o) => o.logprobs), fromGguf.base.map((o) => o.logprobs));
});

test('a compressed-tensors checkpoint with int4 q/k/o/gate/down and int8 v/up (two config groups) keeps both formats and runs as its dequantized weights', (t) => {
  const dir = join(tempDir(t, 'keel-mixed-ct-'), 'model');
  mkdirSync(dir);
  const w4 = join(FIXTURES_DIR, 'quant-ct-w4a16');
  const w8 = join(FIXTURES_DIR, 'quant-ct-w8a16-asym');
  const config = JSON.parse(readFileSync(join(w4, 'config.json'), 'utf8'));
  const w8config = JSON.parse(readFileSync(join(w8, 'config.json'), 'utf8'));
  const int8Modules = /\.(v_proj|up_proj)\./;
  config.quantization_config.config_groups = {
    group_0: { ...config.quantization_config.config_groups.group_0, targets: ['re:.*(q|k|o|gate|down)_proj$'] },
    group_1: { ...w8config.quantization_config.config_groups.group_0, targets: ['re:.*(v|up)_proj$'] },
  };
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
  // Both fixtures quantize the same llama-gqa weights; the int8 one gives v_proj's and up_proj's tensors.
  const tensors = new Map<string, SafetensorsTensor>();
  for (const [fixture, keep] of [[w4, (name: string) => !int8Modules.test(name)], [w8, (name: string) => int8Modules.test(name)]] as const) {
    const ckpt = openCheckpoint(fixture);
    for (const name of ckpt.tensorNames.filter(keep)) tensors.set(name, ckpt.readRaw(name));
    ckpt.close();
  }
  writeSafetensorsFile(join(dir, 'model.safetensors'), tensors);

  // llama-gqa: hidden 64, 4 query heads and 2 key/value heads of 16, intermediate 128; int8 per channel: one group of 64 columns.
  const layer = [
    { format: 'int4', rows: 64 + 32, groupSize: 32 }, { format: 'int8', rows: 32, groupSize: 64 }, // q|k, v
    { format: 'int4', rows: 64, groupSize: 32 }, // o
    { format: 'int4', rows: 128, groupSize: 32 }, { format: 'int8', rows: 128, groupSize: 64 }, // gate, up
    { format: 'int4', rows: 64, groupSize: 32 }, // down
  ];
  const architecture = readModelArchitecture(dir);
  assertRunsAsDequantized(withQuantization(openModelFiles(dir).openCheckpoint(), architecture.quantization, null), dir, [...layer, ...layer]);
});

test('an MoE model\'s shared expert with gate and up in different types stacks them 16-bit for the moe op; its q/k/v and dense MLP split', (t) => {
  const fixture = join(FIXTURES_DIR, 'qwen2-moe');
  const gguf = join(tempDir(t, 'keel-mixed-moe-'), 'qwen2-moe.gguf');
  // Q4_0 (int4) everywhere but v_proj and every up projection (shared expert's, layer 1's dense MLP's, the routed experts') in Q8_0 (int8).
  ggufFromCheckpoint(fixture, gguf, { matrixType: 'Q4_0', matrixTypeOf: (name) => (/attn_v|ffn_up/.test(name) ? 'Q8_0' : undefined) });
  // Hidden 64: 4 query heads and 2 key/value heads of 16; layers 0 and 2 MoE with a shared expert of 48, layer 1 a dense MLP of 64.
  const attention = [{ format: 'int4', rows: 64 + 32, groupSize: 32 }, { format: 'int8', rows: 32, groupSize: 32 }, { format: 'int4', rows: 64, groupSize: 32 }];
  // Shared gate|up stacked 16-bit; its down's 48 input columns are no whole Q4_0 blocks, so the file holds it F16.
  const shared = [{ format: '16-bit', rows: 2 * 48, groupSize: 0 }, { format: '16-bit', rows: 64, groupSize: 0 }];
  const dense = [{ format: 'int4', rows: 64, groupSize: 32 }, { format: 'int8', rows: 64, groupSize: 32 }, { format: 'int4', rows: 64, groupSize: 32 }]; // gate, up, down
  assertRunsAsDequantized(openModelFiles(gguf).openCheckpoint(), gguf, [...attention, ...shared, ...attention, ...dense, ...attention, ...shared]);
});

/**
 * Loads the model of `path` from `ckpt` (closed after): its linear layers' uploads, 2-D and
 * neither a vocabulary matrix (256 rows, quantized in a GGUF file: test/gguf-vocabulary.test.ts)
 * nor an MoE router (4 or 1 rows), are `expected` in load order, and its logits equal, bit for
 * bit, those of the same model with every linear weight and vocabulary matrix loaded as its
 * dequantized float32 values.
 */
function assertRunsAsDequantized(ckpt: Checkpoint, path: string, expected: Omit<Upload, 'cols'>[]): void {
  const architecture = readModelArchitecture(path);
  const newModel = () => createModel(architecture, architecture.config.contextLength);
  try {
    const mixed = newModel();
    const { backend, uploads } = loadRecorded(mixed, ckpt);
    const linears = uploads.filter((u) => u.rows !== 256 && !(u.format === '16-bit' && [4, 1].includes(u.rows)));
    assert.deepEqual(linears.map(({ format, rows, groupSize }) => ({ format, rows, groupSize })), expected);
    const readLinear = (name: string) => {
      const w = ckpt.readLinear!(name);
      return isQuantized(w) ? float32Tensor(dequantizeWeight(w), [w.rows, w.cols]) : w;
    };
    // A GGUF file's vocabulary matrices are read quantized too (safetensors checkpoints have no readVocabulary).
    const vocabulary = ckpt.readVocabulary?.bind(ckpt);
    const readVocabulary = (name: string) => {
      const w = vocabulary!(name);
      return isQuantized(w) ? float32Tensor(dequantizeWeight(w), [w.rows, w.cols]) : w;
    };
    const dense = newModel();
    const denseBackend = new CpuBackend();
    loadWeights(dense, { ...withLinearsDequantized(ckpt), readLinear, ...(vocabulary && { readVocabulary }) }, denseBackend);
    const [actual, reference] = [lastTokenLogits(backend, mixed, MIXED_PROMPTS), lastTokenLogits(denseBackend, dense, MIXED_PROMPTS)];
    actual.forEach((row, i) => assert.deepEqual(row, reference[i], `prompt ${i}`));
  } finally {
    ckpt.close();
  }
}
