import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Tensor } from '../backend/backend.ts';
import { hostOf, RecordingUploader } from '../../test/helpers/model-recording-uploader.ts';
import { tempDir } from '../../test/helpers/model-temp-dir.ts';
import { TINY_LLAMA_CONFIG, writeTinyCheckpoint } from '../../test/helpers/model-tiny-checkpoint.ts';
import { openCheckpoint } from './checkpoint.ts';
import { dummyLlamaWeights } from './dummy-weights.ts';
import { parseHfConfig } from './hf-config.ts';
import { hostTensorToFloat32 } from './host-dtype.ts';
import type { LlamaWeights } from './llama-weights.ts';
import { loadLlamaWeights } from './load-llama-weights.ts';

/** Every tensor of the weights with a path-like name, nulls included. */
function flatten(w: LlamaWeights): [string, Tensor | null][] {
  return [
    ['embedding', w.embedding],
    ...w.layers.flatMap((layer, i) => Object.entries(layer).map(([k, v]) => [`layers.${i}.${k}`, v] as [string, Tensor | null])),
    ['finalNorm', w.finalNorm],
    ['lmHead', w.lmHead],
  ];
}

test('dummy weights have the shapes and dtype a real checkpoint of the same config loads to', (t) => {
  for (const hf of [
    { ...TINY_LLAMA_CONFIG, torch_dtype: 'bfloat16' },
    { ...TINY_LLAMA_CONFIG, model_type: 'qwen3', head_dim: 8, attention_bias: true, dtype: 'float16', tie_word_embeddings: true },
    { ...TINY_LLAMA_CONFIG, model_type: 'qwen2' },
  ]) {
    const config = parseHfConfig(hf, 'config.json');
    const dir = tempDir(t);
    writeTinyCheckpoint(dir, hf);
    const ckpt = openCheckpoint(dir);
    t.after(() => ckpt.close());
    const real = flatten(loadLlamaWeights(ckpt, config, new RecordingUploader()));
    const dummy = flatten(dummyLlamaWeights(config, new RecordingUploader(), 3));
    assert.deepEqual(
      dummy.map(([name, tensor]) => [name, tensor && hostOf(tensor).shape, tensor && hostOf(tensor).dtype]),
      real.map(([name, tensor]) => [name, tensor && hostOf(tensor).shape, tensor && hostOf(tensor).dtype]),
    );
    const weights = dummyLlamaWeights(config, new RecordingUploader(), 3);
    assert.equal(weights.lmHead === weights.embedding, config.tieWordEmbeddings);
  }
});

test('dummy values are seeded, bounded, and norms are one', () => {
  const config = parseHfConfig({ ...TINY_LLAMA_CONFIG, model_type: 'qwen3', head_dim: 8, attention_bias: true }, 'config.json');
  const values = (seed: number) => flatten(dummyLlamaWeights(config, new RecordingUploader(), seed));
  const a = values(1);
  const b = values(1);
  const c = values(2);
  for (let i = 0; i < a.length; i++) {
    const [name, tensor] = a[i];
    if (tensor === null) continue;
    const v = hostTensorToFloat32(hostOf(tensor));
    assert.deepEqual(v, hostTensorToFloat32(hostOf(b[i][1] as Tensor)), `${name} is reproducible`);
    if (/norm/i.test(name)) {
      assert.ok(v.every((x) => x === 1), `${name} is all ones`);
      continue;
    }
    const bound = tensor.shape.length === 2 ? 1 / Math.sqrt(tensor.shape[1]) : 0.02;
    assert.ok(v.every((x) => Math.abs(x) <= bound), `${name} within ±${bound}`);
    assert.ok(new Set(v).size > v.length / 2, `${name} is not constant`);
    assert.notDeepEqual(v, hostTensorToFloat32(hostOf(c[i][1] as Tensor)), `${name} depends on the seed`);
  }
});

test('tensors larger than the random pool are tiled, not left empty', () => {
  const config = parseHfConfig({ ...TINY_LLAMA_CONFIG, vocab_size: 40000, hidden_size: 64, num_attention_heads: 4, num_key_value_heads: 4, num_hidden_layers: 1 }, 'config.json');
  const embedding = hostTensorToFloat32(hostOf(dummyLlamaWeights(config, new RecordingUploader(), 5).embedding));
  assert.equal(embedding.length, 40000 * 64);
  const pool = (1 << 20) + 1;
  assert.equal(embedding[pool + 5], embedding[5]);
  assert.ok(embedding.subarray(embedding.length - 64).some((x) => x !== 0));
  assert.notDeepEqual(embedding.subarray(64, 128), embedding.subarray(0, 64), 'rows differ');
});
