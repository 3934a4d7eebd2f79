import assert from 'node:assert/strict';
import { test } from 'node:test';
import { KeelError } from '../errors.ts';
import { assertInvalidModel } from '../../test/helpers/invalid-model.ts';
import type { LlamaConfig } from './llama.ts';
import { createModel, parseModelArchitecture } from './registry.ts';

const parse = (json: Record<string, unknown>) => parseModelArchitecture(json, 'test/config.json').config as LlamaConfig;

/** A Hunyuan-7B-shaped config.json, with the keys of Tencent's own code that transformers ignores. */
const HUNYUAN_7B = {
  architectures: ['HunYuanDenseV1ForCausalLM'],
  attention_bias: false,
  attention_head_dim: 128,
  bos_token_id: 1,
  cla_share_factor: 2,
  eod_token_id: 127967,
  eos_token_id: 127960,
  head_dim: 128,
  hidden_act: 'silu',
  hidden_size: 4096,
  intermediate_size: 14336,
  max_position_embeddings: 32768,
  mlp_bias: false,
  model_type: 'hunyuan_v1_dense',
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-5,
  rope_scaling: { alpha: 1000.0, beta_fast: 32, beta_slow: 1, factor: 1.0, mscale: 1.0, mscale_all_dim: 1.0, type: 'dynamic' },
  rope_theta: 10000.0,
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
  use_cla: false,
  use_qk_norm: true,
  vocab_size: 128256,
};

/** Hunyuan-7B's shape, small enough to build. */
const TINY = { ...HUNYUAN_7B, hidden_size: 64, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 16, intermediate_size: 32, num_hidden_layers: 1, vocab_size: 64 };

test('Hunyuan dense norms q and k per head after RoPE, with its own norm names', () => {
  const c = parse(HUNYUAN_7B);
  assert.equal(c.qkNorm, true);
  assert.equal(c.qkNormAfterRope, true);
  assert.equal(c.normNames.q, 'self_attn.query_layernorm');
  assert.equal(c.normNames.input, 'input_layernorm');
  assert.equal(parse({ ...HUNYUAN_7B, model_type: 'qwen3' }).qkNormAfterRope, false, 'Qwen3 norms before RoPE');
  const names = createModel(parseModelArchitecture(TINY, 'test/config.json'), 64)
    .parameters()
    .map((p) => p.name)
    .filter((n) => n.startsWith('model.layers.0.self_attn.') && !n.endsWith('proj.weight'));
  assert.deepEqual(names.sort(), ['model.layers.0.self_attn.key_layernorm.weight', 'model.layers.0.self_attn.query_layernorm.weight']);
});

test("NTK-alpha RoPE (dynamic with alpha) rotates by the fixed base theta · alpha^(d / (d − 2)) up to max_position_embeddings; plain dynamic stays dynamic", () => {
  const c = parse(HUNYUAN_7B);
  assert.deepEqual(c.ropeScaling, { type: 'default' });
  assert.ok(Math.abs(c.ropeTheta / (1e4 * 1000 ** (128 / 126)) - 1) < 1e-12);
  assert.equal(c.contextLength, 32768);
  assert.equal(parse({ ...HUNYUAN_7B, rope_scaling: { ...HUNYUAN_7B.rope_scaling, factor: 4 } }).contextLength, 32768, 'alpha ignores factor');
  const plain = parse({ ...HUNYUAN_7B, rope_scaling: { type: 'dynamic', factor: 2 } });
  assert.deepEqual(plain.ropeScaling, { type: 'dynamic', factor: 2 });
  assert.equal(plain.ropeTheta, 1e4);
});

test('Hunyuan reads attention_bias for q, k, v and o, never MLP biases (its MLP has none), and ties the head as told', () => {
  const c = parse({ ...HUNYUAN_7B, attention_bias: true, mlp_bias: true });
  assert.deepEqual([c.attentionBias, c.outputBias, c.mlpBias], [true, true, false]);
  assert.equal(c.tieWordEmbeddings, true);
  assert.equal(parse({ ...HUNYUAN_7B, tie_word_embeddings: undefined }).tieWordEmbeddings, false);
  assert.deepEqual(new Set(parse({ ...HUNYUAN_7B, use_sliding_window: true, sliding_window: 16 }).slidingWindows), new Set([null]));
});

test('a config without head_dim is refused by key (transformers\' HunYuan attention cannot run without one), and StreamingLLM is refused for norms after RoPE', () => {
  assertInvalidModel(() => parse({ ...HUNYUAN_7B, head_dim: undefined }), '"head_dim" is missing');
  assertInvalidModel(() => parse({ ...HUNYUAN_7B, head_dim: undefined, rope_scaling: null }), '"head_dim" is missing');
  const longrope = { rope_type: 'longrope', short_factor: [1], long_factor: [2], original_max_position_embeddings: 4096 };
  assertInvalidModel(() => parse({ ...HUNYUAN_7B, rope_scaling: longrope }), 'LongRoPE is not supported for hunyuan_v1_dense');
  assert.throws(
    () => createModel(parseModelArchitecture(TINY, 'test/config.json'), 64, { sinks: 4, window: 32 }),
    (e: unknown) => e instanceof KeelError && /norms q and k after RoPE: StreamingLLM/.test(e.message),
  );
});
