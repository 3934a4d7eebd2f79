import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RecordingUploader } from '../../test/helpers/model-recording-uploader.ts';
import { hostTensorToFloat32, roundToBf16 } from '../tensor/host-dtype.ts';
import type { GemmaConfig } from './gemma.ts';
import { loadDummyWeights } from './dummy-weights.ts';
import { createModel, parseModelArchitecture } from './registry.ts';
import { assertInvalidModel } from '../../test/helpers/invalid-model.ts';

const parse = (json: Record<string, unknown>) => parseModelArchitecture(json, 'test/config.json').config as GemmaConfig;

function rejects(json: Record<string, unknown>, ...fragments: string[]): void {
  assertInvalidModel(() => parse(json), ...fragments);
}

/** google/gemma-2-9b's config.json (transformers 4.x). */
const GEMMA2_9B = {
  architectures: ['Gemma2ForCausalLM'],
  attn_logit_softcapping: 50.0,
  bos_token_id: 2,
  cache_implementation: 'hybrid',
  eos_token_id: 1,
  final_logit_softcapping: 30.0,
  head_dim: 256,
  hidden_act: 'gelu_pytorch_tanh',
  hidden_activation: 'gelu_pytorch_tanh',
  hidden_size: 3584,
  intermediate_size: 14336,
  max_position_embeddings: 8192,
  model_type: 'gemma2',
  num_attention_heads: 16,
  num_hidden_layers: 42,
  num_key_value_heads: 8,
  pad_token_id: 0,
  query_pre_attn_scalar: 256,
  rms_norm_eps: 1e-6,
  rope_theta: 10000.0,
  sliding_window: 4096,
  sliding_window_size: 4096,
  torch_dtype: 'float32',
  vocab_size: 256000,
};

/** google/gemma-3-1b-it's config.json (transformers 4.x). */
const GEMMA3_1B = {
  architectures: ['Gemma3ForCausalLM'],
  attention_bias: false,
  attn_logit_softcapping: null,
  bos_token_id: 2,
  eos_token_id: [1, 106],
  final_logit_softcapping: null,
  head_dim: 256,
  hidden_activation: 'gelu_pytorch_tanh',
  hidden_size: 1152,
  intermediate_size: 6912,
  max_position_embeddings: 32768,
  model_type: 'gemma3_text',
  num_attention_heads: 4,
  num_hidden_layers: 26,
  num_key_value_heads: 1,
  query_pre_attn_scalar: 256,
  rms_norm_eps: 1e-6,
  rope_local_base_freq: 10000,
  rope_scaling: null,
  rope_theta: 1000000,
  sliding_window: 512,
  sliding_window_pattern: 6,
  torch_dtype: 'bfloat16',
  vocab_size: 262144,
};

/** google/gemma-7b's config.json as first released (transformers 4.38): the legacy hidden_act "gelu". */
const GEMMA_7B = {
  architectures: ['GemmaForCausalLM'],
  attention_bias: false,
  bos_token_id: 2,
  eos_token_id: 1,
  head_dim: 256,
  hidden_act: 'gelu',
  hidden_size: 3072,
  intermediate_size: 24576,
  max_position_embeddings: 8192,
  model_type: 'gemma',
  num_attention_heads: 16,
  num_hidden_layers: 28,
  num_key_value_heads: 16,
  pad_token_id: 0,
  rms_norm_eps: 1e-6,
  rope_scaling: null,
  rope_theta: 10000.0,
  torch_dtype: 'bfloat16',
  vocab_size: 256000,
};

test('a Gemma 7B config: head_dim 256 (not 3072 / 16), scores by head_dim^-0.5, no caps, no window, Llama\'s two norms, tied', () => {
  const c = parse(GEMMA_7B);
  assert.equal(c.modelType, 'gemma');
  assert.equal(c.headDim, 256);
  assert.equal(c.queryPreAttnScalar, 256);
  assert.deepEqual([c.attnLogitSoftcap, c.finalLogitSoftcap], [null, null]);
  assert.ok(c.slidingWindows.length === 28 && c.slidingWindows.every((w) => w === null));
  assert.equal(c.sandwichNorms, false);
  assert.equal(c.qkNorm, false);
  assert.equal(c.tieWordEmbeddings, true);
  assert.deepEqual(c.globalRope, { ropeTheta: 10000, ropeScaling: { type: 'default' } });
  assert.equal(c.localRope, null);
  assert.equal(c.contextLength, 8192);
  // Gemma-2B: one KV head, head_dim 256 = 2048 / 8.
  assert.equal(parse({ ...GEMMA_7B, hidden_size: 2048, num_attention_heads: 8, num_key_value_heads: 1 }).numKvHeads, 1);
});

test('Gemma 1 runs hidden_act as transformers 5 does: "gelu" is the exact GELU, hidden_activation is not read', () => {
  assert.deepEqual(parse(GEMMA_7B).activation, { kind: 'gelu' });
  assert.deepEqual(parse({ ...GEMMA_7B, hidden_act: undefined, hidden_activation: 'gelu' }).activation, { kind: 'gelu-tanh' });
  assert.deepEqual(parse({ ...GEMMA_7B, hidden_act: 'silu' }).activation, { kind: 'silu' });
  assert.deepEqual(parse(GEMMA2_9B).activation, { kind: 'gelu-tanh' });
  assert.deepEqual(parse({ ...GEMMA2_9B, hidden_activation: 'gelu_new' }).activation, { kind: 'gelu-tanh' });
  rejects({ ...GEMMA_7B, hidden_act: 'gelu_accurate' }, 'hidden_act "gelu_accurate"', 'supported:');
});

test('a Gemma 2 9B config: soft-caps, query_pre_attn_scalar, every other layer sliding, tied, one RoPE', () => {
  const c = parse(GEMMA2_9B);
  assert.equal(c.modelType, 'gemma2');
  assert.equal(c.headDim, 256);
  assert.equal(c.queryPreAttnScalar, 256);
  assert.equal(c.attnLogitSoftcap, 50);
  assert.equal(c.finalLogitSoftcap, 30);
  assert.equal(c.contextLength, 8192);
  assert.equal(c.tieWordEmbeddings, true);
  assert.equal(c.qkNorm, false);
  assert.deepEqual(c.slidingWindows.slice(0, 4), [4096, null, 4096, null]);
  assert.equal(c.slidingWindows.length, 42);
  assert.deepEqual(c.globalRope, { ropeTheta: 10000, ropeScaling: { type: 'default' } });
  assert.equal(c.localRope, null);
  assert.deepEqual(c.eosTokenIds, [1]);
});

test('Gemma 2 defaults its soft-caps to transformers\' 50 and 30; null turns a cap off', () => {
  const { attn_logit_softcapping: _a, final_logit_softcapping: _f, ...uncapped } = GEMMA2_9B;
  assert.deepEqual([parse(uncapped).attnLogitSoftcap, parse(uncapped).finalLogitSoftcap], [50, 30]);
  const off = parse({ ...GEMMA2_9B, attn_logit_softcapping: null, final_logit_softcapping: null });
  assert.deepEqual([off.attnLogitSoftcap, off.finalLogitSoftcap], [null, null]);
});

test('Gemma 3 ignores attn_logit_softcapping, as transformers\' Gemma 3 attention does, and still caps its final logits', () => {
  const c = parse({ ...GEMMA3_1B, attn_logit_softcapping: 20, final_logit_softcapping: 10 });
  assert.deepEqual([c.attnLogitSoftcap, c.finalLogitSoftcap], [null, 10]);
});

test('Gemma 3\'s per-layer-type YaRN always truncates: transformers reads truncate from the outer rope_parameters, not the entry', () => {
  const yarn = { rope_type: 'yarn', rope_theta: 1e4, factor: 4, original_max_position_embeddings: 32, truncate: false };
  const c = parse({ ...GEMMA3_1B, rope_parameters: { full_attention: yarn, sliding_attention: { rope_type: 'default', rope_theta: 1e4 } } });
  assert.equal(c.globalRope.ropeScaling.type === 'yarn' && c.globalRope.ropeScaling.truncate, true);
  // A flat rope_parameters (every other family) keeps its own truncate.
  const flat = parse({ ...GEMMA2_9B, rope_parameters: yarn }).globalRope.ropeScaling;
  assert.equal(flat.type === 'yarn' && flat.truncate, false);
});

test('Gemma 1 and 2 stretch their context by a linear or dynamic RoPE factor, as other families do; Gemma 3 keeps max_position_embeddings', () => {
  assert.equal(parse({ ...GEMMA2_9B, rope_scaling: { rope_type: 'dynamic', factor: 2 } }).contextLength, 16384);
  assert.equal(parse({ ...GEMMA_7B, rope_scaling: { rope_type: 'linear', factor: 4 } }).contextLength, 32768);
  assert.equal(parse({ ...GEMMA3_1B, rope_scaling: { rope_type: 'linear', factor: 8 } }).contextLength, 32768);
});

test('a Gemma 3 1B config: q/k norms, 5 sliding layers to 1 global, local and global RoPE bases, no caps', () => {
  const c = parse(GEMMA3_1B);
  assert.equal(c.qkNorm, true);
  assert.deepEqual([c.attnLogitSoftcap, c.finalLogitSoftcap], [null, null]);
  assert.deepEqual(c.slidingWindows.slice(0, 12), [512, 512, 512, 512, 512, null, 512, 512, 512, 512, 512, null]);
  assert.deepEqual(c.globalRope, { ropeTheta: 1e6, ropeScaling: { type: 'default' } });
  assert.deepEqual(c.localRope, { ropeTheta: 1e4, ropeScaling: { type: 'default' } });
  assert.equal(c.contextLength, 32768);
  assert.deepEqual(c.eosTokenIds, [1, 106]);
});

test('Gemma 3\'s Hub rope_scaling applies to the global layers only, and max_position_embeddings is the context as it stands', () => {
  const c = parse({ ...GEMMA3_1B, rope_scaling: { factor: 8.0, rope_type: 'linear' }, max_position_embeddings: 131072 });
  assert.deepEqual(c.globalRope, { ropeTheta: 1e6, ropeScaling: { type: 'linear', factor: 8 } });
  assert.deepEqual(c.localRope, { ropeTheta: 1e4, ropeScaling: { type: 'default' } });
  assert.equal(c.contextLength, 131072);
});

test('transformers 5\'s per-layer-type rope_parameters and layer_types read as the Hub spelling does', () => {
  const { rope_local_base_freq: _l, rope_scaling: _s, rope_theta: _t, sliding_window_pattern: _p, ...rest } = GEMMA3_1B;
  const v5 = {
    ...rest,
    layer_types: Array.from({ length: 26 }, (_, i) => ((i + 1) % 6 === 0 ? 'full_attention' : 'sliding_attention')),
    rope_parameters: {
      full_attention: { rope_type: 'linear', factor: 8.0, rope_theta: 1e6 },
      sliding_attention: { rope_type: 'default', rope_theta: 1e4 },
    },
  };
  const hub = parse({ ...GEMMA3_1B, rope_scaling: { factor: 8.0, rope_type: 'linear' } });
  const c = parse(v5);
  assert.deepEqual(c.globalRope, hub.globalRope);
  assert.deepEqual(c.localRope, hub.localRope);
  assert.deepEqual(c.slidingWindows, hub.slidingWindows);
});

test('the embedding scale is √hidden in float32 whatever the checkpoint dtype; a bf16 backend rounds it as transformers in bf16 does', () => {
  // transformers casts embed_scale to the dtype it runs in: a bf16 checkpoint run in float32 (the CPU backend) keeps it exact.
  for (const torch_dtype of ['bfloat16', 'float16', 'float32']) {
    const model = createModel(parseModelArchitecture({ ...GEMMA2_9B, hidden_size: 48, num_hidden_layers: 2, torch_dtype }, 'test/config.json'), 64);
    assert.equal(model.embedding.scale, Math.fround(Math.sqrt(48)));
  }
  // What CUDA multiplies by (Backend.embedding): Gemma 2 9B's, Gemma 3 1B's and Gemma 2 2B's scales in bf16.
  assert.deepEqual([3584, 1152, 2304].map((h) => roundToBf16(Math.sqrt(h))), [59.75, 34, 48]);
});

test('Gemma 3 uploads two rotary tables (local, global), Gemma 1 and 2 one; norms are stored as 1 + w', () => {
  const tiny = { hidden_size: 16, intermediate_size: 24, num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 1, head_dim: 8, vocab_size: 32, max_position_embeddings: 64, sliding_window: 4 };
  for (const [hf, tables] of [
    [{ ...GEMMA3_1B, ...tiny, sliding_window_pattern: 2 }, 2],
    [{ ...GEMMA2_9B, ...tiny }, 1],
    [{ ...GEMMA_7B, ...tiny }, 1],
  ] as const) {
    const architecture = parseModelArchitecture(hf, 'config.json');
    const uploader = new RecordingUploader();
    loadDummyWeights(createModel(architecture, 64), 'f32', uploader, 1);
    assert.equal(uploader.ropeTables.length, tables, hf.model_type);
    // Dummy norm weights are ones, so Gemma's (1 + w) norms upload twos.
    const norms = uploader.uploaded.filter((t) => t.shape.length === 1);
    assert.ok(norms.length > 0 && norms.every((t) => hostTensorToFloat32(t).every((v) => v === 2)), hf.model_type);
  }
});

test('unsupported Gemma options are named', () => {
  rejects({ ...GEMMA2_9B, hidden_activation: 'relu2' }, 'hidden_activation', '"relu2"');
  rejects({ ...GEMMA3_1B, use_bidirectional_attention: true }, 'use_bidirectional_attention');
  rejects({ ...GEMMA3_1B, layer_types: ['sliding_attention'] }, 'layer_types', '26 layers');
  rejects({ ...GEMMA3_1B, rope_parameters: { full_attention: { rope_type: 'default' }, chunked_attention: { rope_type: 'default' } } }, 'chunked_attention');
  rejects({ ...GEMMA3_1B, rope_parameters: { full_attention: { rope_type: 'longrope' }, sliding_attention: {} } }, 'full_attention', 'short_factor');
  // LongRoPE picks a token's rotary row for the whole model; Gemma 3's local table has no long-factor rows.
  const longrope = { rope_type: 'longrope', short_factor: new Array(128).fill(1), long_factor: new Array(128).fill(2), original_max_position_embeddings: 4096 };
  assertInvalidModel(() => createModel(parseModelArchitecture({ ...GEMMA3_1B, rope_parameters: { full_attention: longrope, sliding_attention: {} } }, 'test/config.json'), 64), 'LongRoPE', 'one rotary embedding');
  rejects({ ...GEMMA2_9B, rope_parameters: { full_attention: { rope_type: 'default' }, sliding_attention: { rope_type: 'default' } } }, 'per-layer-type', 'gemma2');
  // A gemma3 config is a vision-language one (src/models/vision-language.test.ts), whose text model is under text_config.
  rejects({ ...GEMMA2_9B, model_type: 'gemma3' }, 'model_type "gemma3"', 'text_config');
});
