import assert from 'node:assert/strict';
import { test } from 'node:test';
import { assertInvalidModel } from '../../test/helpers/invalid-model.ts';
import type { CohereConfig } from './cohere.ts';
import { createModel, parseModelArchitecture } from './registry.ts';

const parse = (json: Record<string, unknown>) => parseModelArchitecture(json, 'test/config.json').config as CohereConfig;
const shapesOf = (json: Record<string, unknown>) =>
  Object.fromEntries(createModel(parseModelArchitecture(json, 'test/config.json'), 64).parameters().map((p) => [p.name, p.shape]));

/** A Command-R-shaped config.json (transformers 4.x spelling). */
const COMMAND_R = {
  architectures: ['CohereForCausalLM'],
  attention_bias: false,
  bos_token_id: 5,
  eos_token_id: 255001,
  hidden_act: 'silu',
  hidden_size: 8192,
  intermediate_size: 22528,
  layer_norm_eps: 1e-5,
  logit_scale: 0.0625,
  max_position_embeddings: 8192,
  model_type: 'cohere',
  num_attention_heads: 64,
  num_hidden_layers: 40,
  num_key_value_heads: 64,
  pad_token_id: 0,
  rope_theta: 8000000.0,
  torch_dtype: 'float16',
  use_qk_norm: false,
  vocab_size: 256000,
};

/** A Command-R7B-shaped config.json: Cohere 2 with its pattern given as an integer, no layer_types. */
const COMMAND_R7B = {
  architectures: ['Cohere2ForCausalLM'],
  bos_token_id: 5,
  eos_token_id: 255001,
  head_dim: 128,
  hidden_act: 'silu',
  hidden_size: 4096,
  intermediate_size: 14336,
  layer_norm_eps: 1e-5,
  logit_scale: 0.25,
  max_position_embeddings: 132096,
  model_type: 'cohere2',
  num_attention_heads: 32,
  num_hidden_layers: 8,
  num_key_value_heads: 8,
  position_embedding_type: 'rope_gptj',
  rope_scaling: null,
  rope_theta: 50000,
  sliding_window: 4096,
  sliding_window_pattern: 4,
  torch_dtype: 'bfloat16',
  vocab_size: 256000,
};

/** The configs shrunk to a model small enough to build. */
const tiny = (json: Record<string, unknown>) => ({ ...json, hidden_size: 64, intermediate_size: 96, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 16, num_hidden_layers: 4, vocab_size: 128 });

test('a Command-R config reads its keys: every layer full and rotated, the LM head tied by default, logits scaled by logit_scale', () => {
  const config = parse(COMMAND_R);
  assert.equal(config.modelType, 'cohere');
  assert.equal(config.headDim, 128);
  assert.equal(config.layerNormEps, 1e-5);
  assert.deepEqual(config.rope, { ropeTheta: 8e6, ropeScaling: { type: 'default' } });
  assert.equal(config.logitScale, 0.0625);
  assert.equal(config.tieWordEmbeddings, true);
  assert.equal(config.qkNorm, false);
  assert.deepEqual(config.slidingWindows, new Array(40).fill(null));
  assert.deepEqual(config.ropeLayers, new Array(40).fill(true));
  assert.equal(config.contextLength, 8192);
});

test("defaults follow CohereConfig and Cohere2Config: theta 5e5 (Cohere's own) or 1e4, logit_scale 0.0625, layer_norm_eps 1e-5, 8192 positions", () => {
  const { rope_theta: _theta, logit_scale: _scale, layer_norm_eps: _eps, max_position_embeddings: _max, use_qk_norm: _qk, ...bare } = COMMAND_R;
  const config = parse(bare);
  assert.equal(config.rope.ropeTheta, 500_000);
  assert.equal(config.logitScale, 0.0625);
  assert.equal(config.layerNormEps, 1e-5);
  assert.equal(config.maxPositionEmbeddings, 8192);
  assert.equal(config.qkNorm, false);
  const { rope_theta: _theta2, logit_scale: _scale2, ...bare2 } = COMMAND_R7B;
  assert.equal(parse(bare2).rope.ropeTheta, 10_000);
  assert.equal(parse(bare2).logitScale, 0.0625);
});

test('Cohere 2 slides all but every sliding_window_pattern-th layer, and only its sliding layers rotate; layer_types, when listed, decide', () => {
  const config = parse(COMMAND_R7B);
  assert.deepEqual(config.slidingWindows, [4096, 4096, 4096, null, 4096, 4096, 4096, null]);
  assert.deepEqual(config.ropeLayers, [true, true, true, false, true, true, true, false]);
  assert.deepEqual(parse({ ...COMMAND_R7B, sliding_window_pattern: 2, sliding_window: 16 }).slidingWindows, [16, null, 16, null, 16, null, 16, null]);
  const { sliding_window_pattern: _pattern, ...bare } = COMMAND_R7B;
  const types = ['full_attention', 'sliding_attention', 'sliding_attention', 'sliding_attention', 'sliding_attention', 'sliding_attention', 'full_attention', 'full_attention'];
  const listed = parse({ ...bare, layer_types: types });
  assert.deepEqual(listed.slidingWindows, [null, 4096, 4096, 4096, 4096, 4096, null, null]);
  assert.deepEqual(listed.ropeLayers, [false, true, true, true, true, true, false, false]);
  assert.equal(parse({ ...COMMAND_R7B, use_qk_norm: true }).qkNorm, false, 'Cohere2Config has no use_qk_norm');
});

test('refused: a null logit_scale (transformers cannot multiply by None), a Cohere 2 without a window, layer_types of the wrong length, partial rotary', () => {
  assertInvalidModel(() => parse({ ...COMMAND_R, logit_scale: null }), 'logit_scale is null');
  assertInvalidModel(() => parse({ ...COMMAND_R7B, sliding_window: null }), 'sliding_window is null', 'cohere2');
  assertInvalidModel(() => parse({ ...COMMAND_R7B, layer_types: ['full_attention'] }), 'layer_types', '8 layers');
  assertInvalidModel(() => parse({ ...COMMAND_R, partial_rotary_factor: 0.5 }), 'partial_rotary_factor 0.5');
});

test('a Cohere layer has one input LayerNorm and no post-attention norm; use_qk_norm adds a LayerNorm weight per head', () => {
  const shapes = shapesOf(tiny({ ...COMMAND_R, use_qk_norm: true, attention_bias: true }));
  assert.deepEqual(shapes['model.layers.0.input_layernorm.weight'], [64]);
  assert.equal(shapes['model.layers.0.post_attention_layernorm.weight'], undefined);
  assert.deepEqual(shapes['model.layers.0.self_attn.q_norm.weight'], [4, 16]);
  assert.deepEqual(shapes['model.layers.0.self_attn.k_norm.weight'], [2, 16]);
  assert.deepEqual(shapes['model.norm.weight'], [64]);
  for (const proj of ['q', 'k', 'v', 'o']) assert.ok(`model.layers.0.self_attn.${proj}_proj.bias` in shapes, proj);
  assert.equal(shapes['lm_head.weight'], undefined, 'tied by default');
  const plain = shapesOf(tiny({ ...COMMAND_R, tie_word_embeddings: false }));
  assert.equal(plain['model.layers.0.self_attn.q_norm.weight'], undefined);
  assert.deepEqual(plain['lm_head.weight'], [128, 64]);
});
