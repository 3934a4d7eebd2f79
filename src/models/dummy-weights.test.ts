import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RecordingUploader } from '../../test/helpers/model-recording-uploader.ts';
import { tempDir } from '../../test/helpers/model-temp-dir.ts';
import { TINY_LLAMA_CONFIG, writeTinyCheckpoint } from '../../test/helpers/model-tiny-checkpoint.ts';
import { openCheckpoint } from '../checkpoint/checkpoint.ts';
import { hostTensorToFloat32 } from '../tensor/host-dtype.ts';
import type { HostTensor } from '../tensor/host-tensor.ts';
import { loadDummyWeights } from './dummy-weights.ts';
import { loadWeights } from './load-weights.ts';
import { LINEAR_QUANTIZATIONS, roundToNearestLayout } from '../tensor/quantize-rtn.ts';
import { decodeRow, type QuantizedWeight } from '../tensor/quantized-weight.ts';
import { createModel, parseModelArchitecture, readModelArchitecture } from './registry.ts';
import { CpuBackend } from '../backend/cpu/cpu-backend.ts';
import { quantizedMatmul } from '../backend/cpu/ops/quantized-matmul.ts';
import { DEFAULT_MODEL_DIR } from '../engine/load-engine.ts';
import { aqlmCodes } from '../tensor/aqlm.ts';
import { DUMMY_ONLY_QUANTIZATIONS } from '../tensor/quantize-rtn.ts';
import { AQLM_GROUP, aqlmLayout, dequantizeWeight } from '../tensor/quantized-weight.ts';
import { storedSize } from '../tensor/stored-size.ts';
import { aqlmReference } from '../../test/helpers/aqlm-weights.ts';
import { referenceMatmul } from '../../test/helpers/reference-matmul.ts';
import { TestRandom, testSeed } from '../../test/helpers/cpu-random.ts';

/** The host tensors a model of `hf` uploads when loaded with dummy weights. */
function dummyUploads(hf: Record<string, unknown>, seed: number): HostTensor[] {
  const architecture = parseModelArchitecture(hf, 'config.json');
  const uploader = new RecordingUploader();
  loadDummyWeights(createModel(architecture, 64), architecture.config.dtype, uploader, seed);
  return uploader.uploaded;
}

test('dummy weights have the shapes and dtype a real checkpoint of the same config loads to', (t) => {
  for (const hf of [
    { ...TINY_LLAMA_CONFIG, torch_dtype: 'bfloat16' },
    { ...TINY_LLAMA_CONFIG, model_type: 'qwen3', head_dim: 8, attention_bias: true, dtype: 'float16', tie_word_embeddings: true },
    { ...TINY_LLAMA_CONFIG, model_type: 'qwen2' },
  ]) {
    const dir = tempDir(t);
    writeTinyCheckpoint(dir, hf);
    const ckpt = openCheckpoint(dir);
    t.after(() => ckpt.close());
    const real = new RecordingUploader();
    loadWeights(createModel(parseModelArchitecture(hf, 'config.json'), 64), ckpt, real);
    const describe = (tensors: HostTensor[]) => tensors.map((x) => [x.shape, x.dtype]);
    assert.deepEqual(describe(dummyUploads(hf, 3)), describe(real.uploaded));
  }
});

test('dummy values are seeded, bounded, and norms are one', () => {
  const hf = { ...TINY_LLAMA_CONFIG, model_type: 'qwen3', head_dim: 8, attention_bias: true };
  const architecture = parseModelArchitecture(hf, 'config.json');
  const names = createModel(architecture, 64).parameters();
  const read = (seed: number) => {
    const tensors = new Map<string, Float32Array>();
    const uploader = new RecordingUploader();
    const model = createModel(architecture, 64);
    // Read each checkpoint tensor as the loader hands it out, before any stacking.
    loadDummyWeights({ parameters: () => model.parameters(), load: (source) => names.forEach(({ name }) => tensors.set(name, hostTensorToFloat32(source.read(name)))) }, 'f32', uploader, seed);
    return tensors;
  };
  const a = read(1);
  const b = read(1);
  const c = read(2);
  for (const { name, shape } of names) {
    const v = a.get(name) as Float32Array;
    assert.deepEqual(v, b.get(name), `${name} is reproducible`);
    if (/norm/i.test(name)) {
      assert.ok(v.every((x) => x === 1), `${name} is all ones`);
      continue;
    }
    const bound = shape.length === 2 ? 1 / Math.sqrt(shape[1]) : 0.02;
    assert.ok(v.every((x) => Math.abs(x) <= bound), `${name} within ±${bound}`);
    assert.ok(new Set(v).size > v.length / 2, `${name} is not constant`);
    assert.notDeepEqual(v, c.get(name), `${name} depends on the seed`);
  }
});

test('tensors larger than the random pool are tiled, not left empty', () => {
  const hf = { ...TINY_LLAMA_CONFIG, vocab_size: 40000, hidden_size: 64, num_attention_heads: 4, num_key_value_heads: 4, num_hidden_layers: 1 };
  const embedding = hostTensorToFloat32(dummyUploads(hf, 5)[0]);
  assert.equal(embedding.length, 40000 * 64);
  const pool = (1 << 20) + 1;
  assert.equal(embedding[pool + 5], embedding[5]);
  assert.ok(embedding.subarray(embedding.length - 64).some((x) => x !== 0));
  assert.notDeepEqual(embedding.subarray(64, 128), embedding.subarray(0, 64), 'rows differ');
});

test('with a linear quantization, projections are random codes in the layout --quantization makes, bounded as the 16-bit values are', () => {
  const hf = { ...TINY_LLAMA_CONFIG, model_type: 'qwen3', head_dim: 8, attention_bias: true };
  const architecture = parseModelArchitecture(hf, 'config.json');
  const model = createModel(architecture, 64);
  const names = model.parameters().filter(({ name }) => name.endsWith('_proj.weight'));
  assert.ok(names.length > 0);
  for (const method of LINEAR_QUANTIZATIONS) {
    const read = (seed: number) => {
      const weights = new Map<string, QuantizedWeight>();
      const load = (source: { readLinear?: (name: string) => unknown }) => {
        for (const { name } of names) weights.set(name, source.readLinear!(name) as QuantizedWeight);
      };
      loadDummyWeights({ parameters: () => model.parameters(), load }, 'bf16', new RecordingUploader(), seed, method);
      return weights;
    };
    const a = read(1);
    const b = read(2);
    for (const { name, shape } of names) {
      const w = a.get(name)!;
      const layout = roundToNearestLayout(shape[0], shape[1], method);
      assert.deepEqual([w.format, w.rows, w.cols, w.groupSize, w.zeros === null, w.mixedInt8], [layout.format, layout.rows, layout.cols, layout.groupSize, layout.zeros === null, layout.mixedInt8], `${method} ${name}`);
      const values = new Float32Array(w.cols * w.rows);
      for (let row = 0; row < w.rows; row++) decodeRow(w, row, values.subarray(row * w.cols, (row + 1) * w.cols));
      const bound = 1 / Math.sqrt(shape[1]);
      assert.ok(values.every((x) => Math.abs(x) <= bound * 1.0001), `${method} ${name} within ±${bound}`);
      assert.ok(new Set(values).size > 4, `${method} ${name} is not constant`);
      assert.notDeepEqual(w.codes, b.get(name)!.codes, `${method} ${name} depends on the seed`);
    }
  }
});

/** A CPU backend that also keeps the quantized weights it is handed, as they arrive. */
class KeepingCpuBackend extends CpuBackend {
  readonly quantized: QuantizedWeight[] = [];

  override loadQuantizedWeight(w: QuantizedWeight, options: { table?: boolean } = {}) {
    this.quantized.push(w);
    return super.loadQuantizedWeight(w, options);
  }
}

test('--quantization aqlm-2x8 / aqlm-1x16 dummy weights: keel-tiny\'s projections are AQLM weights the CPU matmul multiplies by their values, sized as stored', () => {
  const architecture = readModelArchitecture(DEFAULT_MODEL_DIR);
  const random = new TestRandom(testSeed('dummy-aqlm'));
  for (const format of DUMMY_ONLY_QUANTIZATIONS) {
    const backend = new KeepingCpuBackend();
    const model = createModel(architecture, 64);
    loadDummyWeights(model, architecture.config.dtype, backend, 1, format);
    const projections = model.parameters().filter(({ name }) => name.endsWith('_proj.weight'));
    const { codebooks, size } = aqlmLayout(format);
    // q/k/v and gate/up arrive stacked: one weight per stack, each part its own codebooks.
    const parts = backend.quantized.reduce((n, w) => n + (w.codebooks?.partRows.length ?? 0), 0);
    assert.equal(parts, projections.length, `${format}: every projection is an AQLM part`);
    for (const w of backend.quantized) {
      const what = `${format} ${describe(w)}`;
      assert.equal(w.format, format, what);
      const books = w.codebooks!;
      assert.equal(books.values.length, books.partRows.length * codebooks * size * AQLM_GROUP, what);
      assert.ok(books.values.every((v) => Math.abs(v) <= 1 && Math.fround(v) === v), `${what}: codebook values in ±1`);
      assert.ok(new Set(books.values).size > 1000, `${what}: codebooks are not constant`);
      const codes = Array.from({ length: w.rows }, (_, r) => Array.from({ length: w.cols / AQLM_GROUP }, (_, g) => aqlmCodes(w, r, g)));
      const dense = aqlmReference({ w, codes });
      assert.deepEqual(dequantizeWeight(w), dense, `${what}: dequantized by AQLM's definition`);
      const bound = 1 / Math.sqrt(w.cols);
      assert.ok(dense.every((v) => Math.abs(v) <= bound * 1.0001), `${what}: within ±${bound}`);
      const x = random.floats(2 * w.cols);
      const out = new Float32Array(2 * w.rows);
      quantizedMatmul(x, 2, w, null, out);
      assert.deepEqual(out, referenceMatmul(x, 2, dense, w.rows, w.cols, null), `${what}: CPU matmul`);
    }
    // The roofline weighs what parameters() reports: codes and scales as bytes, codebooks as values.
    const stored = projections.map((p) => p.stored!);
    const total = (f: (s: { elements: number; bytes: number }) => number) => stored.reduce((n, s) => n + f(s), 0);
    const sizes = backend.quantized.map(storedSize);
    assert.equal(total((s) => s.bytes), sizes.reduce((n, s) => n + s.bytes, 0), format);
    assert.equal(total((s) => s.bytes), projections.reduce((n, p) => n + p.shape[0] * ((p.shape[1] / AQLM_GROUP) * 2 + 4), 0), `${format}: 2-byte code words and a float32 scale a row`);
    assert.equal(total((s) => s.elements), projections.length * codebooks * size * AQLM_GROUP, `${format}: one codebook set a projection`);
  }
});

test('--quantization aqlm-* dummy weights need input widths that are multiples of 8', () => {
  const hf = { ...TINY_LLAMA_CONFIG, intermediate_size: 36 };
  const model = createModel(parseModelArchitecture(hf, 'config.json'), 64);
  assert.throws(() => loadDummyWeights(model, 'bf16', new KeepingCpuBackend(), 1, 'aqlm-2x8'), /--quantization aqlm-2x8: model\.layers\.0\.mlp\.down_proj\.weight has 36 input columns, not a multiple of 8/);
});

function describe(w: QuantizedWeight): string {
  return `[${w.rows}, ${w.cols}] parts ${w.codebooks?.partRows.join('+')}`;
}
