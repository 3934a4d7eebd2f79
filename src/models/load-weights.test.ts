import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { HostTensor } from '../tensor/host-tensor.ts';
import { KeelError } from '../errors.ts';
import { RecordingUploader } from '../../test/helpers/model-recording-uploader.ts';
import { tempDir } from '../../test/helpers/model-temp-dir.ts';
import { TINY_LLAMA_CONFIG, writeTinyCheckpoint } from '../../test/helpers/model-tiny-checkpoint.ts';
import { openCheckpoint, type Checkpoint } from '../checkpoint/checkpoint.ts';
import { writeSafetensors } from '../checkpoint/safetensors-writer.ts';
import type { Layer } from '../layers/parameters.ts';
import { float32ToHostTensor, hostTensorToFloat32 } from '../tensor/host-dtype.ts';
import { concatRows } from '../tensor/host-ops.ts';
import type { CausalLM } from './causal-lm.ts';
import { loadWeights, loadWeightsWithProgress } from './load-weights.ts';
import { createModel, parseModelArchitecture } from './registry.ts';

function open(t: Parameters<typeof tempDir>[0], dir: string): Checkpoint {
  const ckpt = openCheckpoint(dir);
  t.after(() => ckpt.close());
  return ckpt;
}

function modelFor(hf: Record<string, unknown>): CausalLM {
  return createModel(parseModelArchitecture(hf, 'config.json'), 64);
}

function rejectsModel(fn: () => unknown, ...fragments: string[]): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof KeelError && error.kind === 'invalid_model', `expected invalid_model KeelError, got ${error}`);
    for (const f of fragments) assert.ok(error.message.includes(f), `"${error.message}" lacks "${f}"`);
    return true;
  });
}

/**
 * What a Llama-family model uploads, in order, from the checkpoint tensors `w`: q/k/v and gate/up
 * stacked into one tensor each, biases and q/k norms where the config has them.
 */
function expectedLlamaUploads(w: (name: string) => HostTensor, layers: number, opts: { qkvBias: boolean; oBias: boolean; qkNorm: boolean; tied: boolean }): HostTensor[] {
  const out = [w('model.embed_tokens.weight')];
  for (let i = 0; i < layers; i++) {
    const p = `model.layers.${i}`;
    const a = `${p}.self_attn`;
    out.push(w(`${p}.input_layernorm.weight`));
    out.push(concatRows([w(`${a}.q_proj.weight`), w(`${a}.k_proj.weight`), w(`${a}.v_proj.weight`)]));
    if (opts.qkvBias) out.push(concatRows([w(`${a}.q_proj.bias`), w(`${a}.k_proj.bias`), w(`${a}.v_proj.bias`)]));
    if (opts.qkNorm) out.push(w(`${a}.q_norm.weight`), w(`${a}.k_norm.weight`));
    out.push(w(`${a}.o_proj.weight`));
    if (opts.oBias) out.push(w(`${a}.o_proj.bias`));
    out.push(w(`${p}.post_attention_layernorm.weight`));
    out.push(concatRows([w(`${p}.mlp.gate_proj.weight`), w(`${p}.mlp.up_proj.weight`)]));
    out.push(w(`${p}.mlp.down_proj.weight`));
  }
  out.push(w('model.norm.weight'));
  if (!opts.tied) out.push(w('lm_head.weight'));
  return out;
}

test('llama tensors load with q/k/v and gate/up rows stacked on the host, one upload per matmul', (t) => {
  const hf = { ...TINY_LLAMA_CONFIG, torch_dtype: 'bfloat16' };
  const dir = tempDir(t);
  const written = writeTinyCheckpoint(dir, hf);
  const uploader = new RecordingUploader();
  const progress: [number, number][] = [];
  loadWeights(modelFor(hf), open(t, dir), uploader, { onProgress: (done, total) => progress.push([done, total]) });
  const w = (name: string) => written.get(name) as HostTensor;
  assert.deepEqual(uploader.uploaded, expectedLlamaUploads(w, 2, { qkvBias: false, oBias: false, qkNorm: false, tied: false }));
  assert.ok(uploader.uploaded.every((u) => u.dtype === 'bf16'));
  assert.deepEqual(uploader.uploaded[2].shape, [(4 + 2 * 2) * 4, 16], 'stacked q/k/v');
  assert.equal(uploader.ropeTables.length, 1, 'one rotary table shared by every layer');
  const total = written.size;
  assert.deepEqual(progress, Array.from({ length: total }, (_, i) => [i + 1, total]));
});

test('qwen2 biases, qwen3 qk-norm and llama attention_bias are loaded when the config asks for them', (t) => {
  for (const [hf, opts] of [
    [{ ...TINY_LLAMA_CONFIG, model_type: 'qwen2' }, { qkvBias: true, oBias: false, qkNorm: false }],
    [{ ...TINY_LLAMA_CONFIG, model_type: 'qwen3', head_dim: 8, attention_bias: true }, { qkvBias: true, oBias: true, qkNorm: true }],
    [{ ...TINY_LLAMA_CONFIG, attention_bias: true }, { qkvBias: true, oBias: true, qkNorm: false }],
  ] as const) {
    const dir = tempDir(t);
    const written = writeTinyCheckpoint(dir, hf);
    const uploader = new RecordingUploader();
    loadWeights(modelFor(hf), open(t, dir), uploader);
    const w = (name: string) => written.get(name) as HostTensor;
    assert.deepEqual(uploader.uploaded, expectedLlamaUploads(w, 2, { ...opts, tied: false }), hf.model_type);
  }
});

test('tied embeddings read no lm_head and ignore a stray lm_head.weight', (t) => {
  const hf = { ...TINY_LLAMA_CONFIG, tie_word_embeddings: true };
  const dir = tempDir(t);
  const stray = float32ToHostTensor(new Float32Array(32 * 16), 'f32', [32, 16]);
  const written = writeTinyCheckpoint(dir, hf, { replace: { 'lm_head.weight': stray } });
  const uploader = new RecordingUploader();
  let total = 0;
  loadWeights(modelFor(hf), open(t, dir), uploader, { onProgress: (_, n) => (total = n) });
  assert.ok(!uploader.uploaded.includes(stray));
  assert.deepEqual(uploader.uploaded, expectedLlamaUploads((name) => written.get(name) as HostTensor, 2, { qkvBias: false, oBias: false, qkNorm: false, tied: true }));
  assert.equal(total, 1 + 2 * 9 + 1, 'embedding, 9 tensors per layer, final norm');
});

test('a sharded checkpoint loads the same weights as a single file', (t) => {
  const single = tempDir(t);
  const sharded = tempDir(t);
  writeTinyCheckpoint(single, TINY_LLAMA_CONFIG, { seed: 7 });
  writeTinyCheckpoint(sharded, TINY_LLAMA_CONFIG, { seed: 7, shards: 3 });
  const a = new RecordingUploader();
  const b = new RecordingUploader();
  loadWeights(modelFor(TINY_LLAMA_CONFIG), open(t, single), a);
  loadWeights(modelFor(TINY_LLAMA_CONFIG), open(t, sharded), b);
  assert.deepEqual(b.uploaded, a.uploaded);
});

test('q/k/v of different dtypes are stacked as float32', (t) => {
  const dir = tempDir(t);
  const values = (n: number, start: number) => Float32Array.from({ length: n * 16 }, (_, i) => (start + i) / 64);
  const q = float32ToHostTensor(values(16, 0), 'bf16', [16, 16]);
  const k = float32ToHostTensor(values(8, 256), 'f32', [8, 16]);
  const v = float32ToHostTensor(values(8, 384), 'f16', [8, 16]);
  const p = 'model.layers.0.self_attn';
  writeTinyCheckpoint(dir, TINY_LLAMA_CONFIG, { replace: { [`${p}.q_proj.weight`]: q, [`${p}.k_proj.weight`]: k, [`${p}.v_proj.weight`]: v } });
  const uploader = new RecordingUploader();
  loadWeights(modelFor(TINY_LLAMA_CONFIG), open(t, dir), uploader);
  const qkv = uploader.uploaded[2];
  assert.equal(qkv.dtype, 'f32');
  assert.deepEqual(qkv.shape, [32, 16]);
  assert.deepEqual(hostTensorToFloat32(qkv), Float32Array.from([...hostTensorToFloat32(q), ...hostTensorToFloat32(k), ...hostTensorToFloat32(v)]));
});

test('missing tensors and shapes that disagree with config.json are named before anything loads', (t) => {
  const model = modelFor(TINY_LLAMA_CONFIG);
  const missing = tempDir(t);
  writeTinyCheckpoint(missing, TINY_LLAMA_CONFIG, { omit: ['model.layers.1.mlp.up_proj.weight'] });
  const uploader = new RecordingUploader();
  rejectsModel(() => loadWeights(model, open(t, missing), uploader), '"model.layers.1.mlp.up_proj.weight"', missing, '[24, 16]');
  assert.equal(uploader.uploaded.length, 0);

  const untied = tempDir(t);
  writeTinyCheckpoint(untied, TINY_LLAMA_CONFIG, { omit: ['lm_head.weight'] });
  rejectsModel(() => loadWeights(model, open(t, untied), uploader), '"lm_head.weight"');

  const misshapen = tempDir(t);
  const wrong = float32ToHostTensor(new Float32Array(16 * 12), 'f32', [12, 16]);
  writeTinyCheckpoint(misshapen, TINY_LLAMA_CONFIG, { replace: { 'model.layers.0.self_attn.k_proj.weight': wrong } });
  rejectsModel(() => loadWeights(model, open(t, misshapen), uploader), '"model.layers.0.self_attn.k_proj.weight"', '[12, 16]', '[8, 16]');

  const llama = tempDir(t);
  writeTinyCheckpoint(llama, TINY_LLAMA_CONFIG);
  rejectsModel(() => loadWeights(modelFor({ ...TINY_LLAMA_CONFIG, model_type: 'qwen2' }), open(t, llama), uploader), '"model.layers.0.self_attn.q_proj.bias"');
});

test('a tensor a layer takes in two shapes (orShape) loads in either, and one in neither names both', (t) => {
  const layer: Layer = {
    parameters: () => [{ name: 'experts', shape: [2, 6, 4], orShape: [2, 4, 6] }],
    load: (source) => void source.read('experts'),
  };
  for (const shape of [[2, 6, 4], [2, 4, 6]]) {
    const dir = tempDir(t);
    writeSafetensors(`${dir}/model.safetensors`, { experts: float32ToHostTensor(new Float32Array(48), 'f32', shape) });
    loadWeights(layer, open(t, dir), new RecordingUploader());
  }
  const dir = tempDir(t);
  writeSafetensors(`${dir}/model.safetensors`, { experts: float32ToHostTensor(new Float32Array(48), 'f32', [4, 6, 2]) });
  rejectsModel(() => loadWeights(layer, open(t, dir), new RecordingUploader()), '"experts"', '[4, 6, 2]', '[2, 6, 4] or [2, 4, 6]');
});

test('loadWeightsWithProgress closes the checkpoint, also when loading fails', (t) => {
  const dir = tempDir(t);
  writeTinyCheckpoint(dir, TINY_LLAMA_CONFIG);
  for (const good of [true, false]) {
    const ckpt = openCheckpoint(dir);
    let closed = 0;
    const spy: Checkpoint = Object.assign(Object.create(ckpt) as Checkpoint, { close: () => (closed++, ckpt.close()) });
    const model = modelFor(good ? TINY_LLAMA_CONFIG : { ...TINY_LLAMA_CONFIG, model_type: 'qwen3', head_dim: 4 });
    const load = () => loadWeightsWithProgress(model, spy, new RecordingUploader(), { showProgress: true });
    if (good) load();
    else assert.throws(load, /q_norm/);
    assert.equal(closed, 1);
  }
});
