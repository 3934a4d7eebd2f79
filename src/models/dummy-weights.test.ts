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
import { createModel, parseModelArchitecture } from './registry.ts';

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
