import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { HostTensor } from '../backend/backend.ts';
import { KeelError } from '../errors.ts';
import { hostOf, RecordingUploader } from '../../test/helpers/model-recording-uploader.ts';
import { tempDir } from '../../test/helpers/model-temp-dir.ts';
import { TINY_LLAMA_CONFIG, writeTinyCheckpoint } from '../../test/helpers/model-tiny-checkpoint.ts';
import { openCheckpoint, type Checkpoint } from './checkpoint.ts';
import { parseHfConfig } from './hf-config.ts';
import { float32ToHostTensor, hostTensorToFloat32 } from './host-dtype.ts';
import { loadLlamaWeights, loadModelWeights } from './load-llama-weights.ts';

function concatBytes(...parts: HostTensor[]): Uint8Array {
  return Uint8Array.from(parts.flatMap((p) => Array.from(p.data)));
}

function open(t: Parameters<typeof tempDir>[0], dir: string): Checkpoint {
  const ckpt = openCheckpoint(dir);
  t.after(() => ckpt.close());
  return ckpt;
}

function rejectsModel(fn: () => unknown, ...fragments: string[]): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof KeelError && error.kind === 'invalid_model', `expected invalid_model KeelError, got ${error}`);
    for (const f of fragments) assert.ok(error.message.includes(f), `"${error.message}" lacks "${f}"`);
    return true;
  });
}

test('llama tensors map onto LlamaWeights with q/k/v and gate/up rows merged on the host', (t) => {
  const dir = tempDir(t);
  const written = writeTinyCheckpoint(dir, { ...TINY_LLAMA_CONFIG, torch_dtype: 'bfloat16' });
  const config = parseHfConfig({ ...TINY_LLAMA_CONFIG, torch_dtype: 'bfloat16' }, 'config.json');
  const uploader = new RecordingUploader();
  const progress: [number, number][] = [];
  const weights = loadLlamaWeights(open(t, dir), config, uploader, { onProgress: (done, total) => progress.push([done, total]) });

  const w = (name: string) => written.get(name) as HostTensor;
  assert.equal(weights.layers.length, 2);
  assert.deepEqual(hostOf(weights.embedding), w('model.embed_tokens.weight'));
  assert.deepEqual(hostOf(weights.finalNorm), w('model.norm.weight'));
  assert.deepEqual(hostOf(weights.lmHead), w('lm_head.weight'));
  assert.notEqual(weights.lmHead, weights.embedding);
  for (const [i, layer] of weights.layers.entries()) {
    const p = `model.layers.${i}`;
    const qkv = hostOf(layer.qkv);
    assert.equal(qkv.dtype, 'bf16');
    assert.deepEqual(qkv.shape, [(4 + 2 * 2) * 4, 16]);
    assert.deepEqual(qkv.data, concatBytes(w(`${p}.self_attn.q_proj.weight`), w(`${p}.self_attn.k_proj.weight`), w(`${p}.self_attn.v_proj.weight`)));
    const gateUp = hostOf(layer.gateUp);
    assert.deepEqual(gateUp.shape, [48, 16]);
    assert.deepEqual(gateUp.data, concatBytes(w(`${p}.mlp.gate_proj.weight`), w(`${p}.mlp.up_proj.weight`)));
    assert.deepEqual(hostOf(layer.down), w(`${p}.mlp.down_proj.weight`));
    assert.deepEqual(hostOf(layer.o), w(`${p}.self_attn.o_proj.weight`));
    assert.deepEqual(hostOf(layer.inputNorm), w(`${p}.input_layernorm.weight`));
    assert.deepEqual(hostOf(layer.postAttentionNorm), w(`${p}.post_attention_layernorm.weight`));
    assert.equal(layer.qkvBias, null);
    assert.equal(layer.oBias, null);
    assert.equal(layer.qNorm, null);
    assert.equal(layer.kNorm, null);
  }
  const total = written.size;
  assert.deepEqual(progress, Array.from({ length: total }, (_, i) => [i + 1, total]));
  assert.equal(uploader.uploaded.length, 3 + 2 * 6, 'one upload per merged tensor');
});

test('qwen2 biases, qwen3 qk-norm and llama attention_bias are loaded when the config asks for them', (t) => {
  for (const hf of [
    { ...TINY_LLAMA_CONFIG, model_type: 'qwen2' },
    { ...TINY_LLAMA_CONFIG, model_type: 'qwen3', head_dim: 8, attention_bias: true },
    { ...TINY_LLAMA_CONFIG, attention_bias: true },
  ]) {
    const dir = tempDir(t);
    const written = writeTinyCheckpoint(dir, hf);
    const config = parseHfConfig(hf, 'config.json');
    const layer = loadLlamaWeights(open(t, dir), config, new RecordingUploader()).layers[1];
    const p = 'model.layers.1.self_attn';
    const w = (name: string) => written.get(`${p}.${name}`) as HostTensor;
    const qkvBias = hostOf(layer.qkvBias);
    assert.deepEqual(qkvBias.shape, [8 * config.headDim]);
    assert.deepEqual(qkvBias.data, concatBytes(w('q_proj.bias'), w('k_proj.bias'), w('v_proj.bias')));
    assert.equal(layer.oBias === null, hf.model_type === 'qwen2', `${hf.model_type} o bias`);
    if (layer.oBias) assert.deepEqual(hostOf(layer.oBias), w('o_proj.bias'));
    assert.equal(layer.qNorm !== null, hf.model_type === 'qwen3');
    if (layer.qNorm && layer.kNorm) {
      assert.deepEqual(hostOf(layer.qNorm), w('q_norm.weight'));
      assert.deepEqual(hostOf(layer.kNorm), w('k_norm.weight'));
    }
  }
});

test('tied embeddings reuse the embedding tensor and ignore a stray lm_head.weight', (t) => {
  const hf = { ...TINY_LLAMA_CONFIG, tie_word_embeddings: true };
  const config = parseHfConfig(hf, 'config.json');
  const dir = tempDir(t);
  const stray = float32ToHostTensor(new Float32Array(32 * 16), 'f32', [32, 16]);
  writeTinyCheckpoint(dir, hf, { replace: { 'lm_head.weight': stray } });
  const uploader = new RecordingUploader();
  let total = 0;
  const weights = loadLlamaWeights(open(t, dir), config, uploader, { onProgress: (_, n) => (total = n) });
  assert.equal(weights.lmHead, weights.embedding);
  assert.ok(!uploader.uploaded.includes(stray));
  assert.equal(total, 1 + 2 * 9 + 1, "embedding, 9 tensors per layer, final norm");
});

test('a sharded checkpoint loads the same weights as a single file', (t) => {
  const config = parseHfConfig(TINY_LLAMA_CONFIG, 'config.json');
  const single = tempDir(t);
  const sharded = tempDir(t);
  writeTinyCheckpoint(single, TINY_LLAMA_CONFIG, { seed: 7 });
  writeTinyCheckpoint(sharded, TINY_LLAMA_CONFIG, { seed: 7, shards: 3 });
  const a = new RecordingUploader();
  const b = new RecordingUploader();
  loadLlamaWeights(open(t, single), config, a);
  loadLlamaWeights(open(t, sharded), config, b);
  assert.deepEqual(b.uploaded, a.uploaded);
});

test('q/k/v of different dtypes are merged as float32', (t) => {
  const dir = tempDir(t);
  const values = (n: number, start: number) => Float32Array.from({ length: n * 16 }, (_, i) => (start + i) / 64);
  const q = float32ToHostTensor(values(16, 0), 'bf16', [16, 16]);
  const k = float32ToHostTensor(values(8, 256), 'f32', [8, 16]);
  const v = float32ToHostTensor(values(8, 384), 'f16', [8, 16]);
  const p = 'model.layers.0.self_attn';
  writeTinyCheckpoint(dir, TINY_LLAMA_CONFIG, { replace: { [`${p}.q_proj.weight`]: q, [`${p}.k_proj.weight`]: k, [`${p}.v_proj.weight`]: v } });
  const weights = loadLlamaWeights(open(t, dir), parseHfConfig(TINY_LLAMA_CONFIG, 'config.json'), new RecordingUploader());
  const qkv = hostOf(weights.layers[0].qkv);
  assert.equal(qkv.dtype, 'f32');
  assert.deepEqual(qkv.shape, [32, 16]);
  assert.deepEqual(hostTensorToFloat32(qkv), Float32Array.from([...hostTensorToFloat32(q), ...hostTensorToFloat32(k), ...hostTensorToFloat32(v)]));
});

test('missing tensors and shapes that disagree with config.json are named before anything loads', (t) => {
  const config = parseHfConfig(TINY_LLAMA_CONFIG, 'config.json');
  const missing = tempDir(t);
  writeTinyCheckpoint(missing, TINY_LLAMA_CONFIG, { omit: ['model.layers.1.mlp.up_proj.weight'] });
  const uploader = new RecordingUploader();
  rejectsModel(() => loadLlamaWeights(open(t, missing), config, uploader), '"model.layers.1.mlp.up_proj.weight"', missing, '[24, 16]');
  assert.equal(uploader.uploaded.length, 0);

  const untied = tempDir(t);
  writeTinyCheckpoint(untied, TINY_LLAMA_CONFIG, { omit: ['lm_head.weight'] });
  rejectsModel(() => loadLlamaWeights(open(t, untied), config, uploader), '"lm_head.weight"');

  const misshapen = tempDir(t);
  const wrong = float32ToHostTensor(new Float32Array(16 * 12), 'f32', [12, 16]);
  writeTinyCheckpoint(misshapen, TINY_LLAMA_CONFIG, { replace: { 'model.layers.0.self_attn.k_proj.weight': wrong } });
  rejectsModel(() => loadLlamaWeights(open(t, misshapen), config, uploader), '"model.layers.0.self_attn.k_proj.weight"', '[12, 16]', '[8, 16]');

  const qwen2 = tempDir(t);
  writeTinyCheckpoint(qwen2, TINY_LLAMA_CONFIG);
  rejectsModel(() => loadLlamaWeights(open(t, qwen2), { ...config, attentionBias: true }, uploader), '"model.layers.0.self_attn.q_proj.bias"');
});

test('loadModelWeights closes the checkpoint, also when loading fails', (t) => {
  const config = parseHfConfig(TINY_LLAMA_CONFIG, 'config.json');
  const dir = tempDir(t);
  writeTinyCheckpoint(dir, TINY_LLAMA_CONFIG);
  for (const good of [true, false]) {
    const ckpt = openCheckpoint(dir);
    let closed = 0;
    const spy: Checkpoint = Object.assign(Object.create(ckpt) as Checkpoint, { close: () => (closed++, ckpt.close()) });
    const load = () => loadModelWeights(spy, good ? config : { ...config, qkNorm: true }, new RecordingUploader(), { showProgress: true });
    if (good) assert.equal(load().layers.length, 2);
    else assert.throws(load, /q_norm/);
    assert.equal(closed, 1);
  }
});
