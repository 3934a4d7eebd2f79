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
