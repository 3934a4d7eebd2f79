import assert from 'node:assert/strict';
import { test } from 'node:test';
import { assertInvalidModel } from '../../test/helpers/invalid-model.ts';
import type { OlmoConfig } from './olmo.ts';
import { createModel, parseModelArchitecture } from './registry.ts';

const parse = (json: Record<string, unknown>) => parseModelArchitecture(json, 'test/config.json').config as OlmoConfig;

/** An OLMo 2 7B-shaped config.json (transformers 4.x spelling). */
const OLMO2_7B = {
  architectures: ['Olmo2ForCausalLM'],
  attention_bias: false,
  eos_token_id: 100257,
  hidden_act: 'silu',
  hidden_size: 4096,
  intermediate_size: 11008,
  max_position_embeddings: 4096,
  model_type: 'olmo2',
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 32,
  pad_token_id: 100277,
  rms_norm_eps: 1e-6,
  rope_scaling: null,
  rope_theta: 500000,
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
  vocab_size: 100352,
};

/** An OLMo 3 config.json without layer_types (4.x spelling): Olmo3Config's defaults fill them. */
const OLMO3 = {
  ...OLMO2_7B,
  architectures: ['Olmo3ForCausalLM'],
  model_type: 'olmo3',
  num_hidden_layers: 8,
  max_position_embeddings: 65536,
};

test('an OLMo 2 config reads one RoPE for every layer, no windows, and the head size hidden / heads', () => {
  const config = parse(OLMO2_7B);
  assert.equal(config.modelType, 'olmo2');
  assert.equal(config.headDim, 128);
  assert.equal(config.rmsNormEps, 1e-6);
  assert.deepEqual(config.fullRope, { ropeTheta: 500000, ropeScaling: { type: 'default' } });
  assert.equal(config.slidingRope, null);
  assert.deepEqual(config.slidingWindows, new Array(32).fill(null));
  assert.equal(config.contextLength, 4096);
});

test('OLMo 2 defaults follow Olmo2Config: RoPE theta 1e4, rms_norm_eps 1e-5, 2048 positions', () => {
  const { rope_theta: _theta, rms_norm_eps: _eps, max_position_embeddings: _max, ...bare } = OLMO2_7B;
  const config = parse(bare);
  assert.equal(config.fullRope.ropeTheta, 10000);
  assert.equal(config.rmsNormEps, 1e-5);
  assert.equal(config.maxPositionEmbeddings, 2048);
});

test('OLMo 3 slides three layers of four by default, with a 4096 window', () => {
  const config = parse(OLMO3);
  assert.deepEqual(config.slidingWindows, [4096, 4096, 4096, null, 4096, 4096, 4096, null]);
  assert.deepEqual(parse({ ...OLMO3, sliding_window: null }).slidingWindows, new Array(8).fill(null));
  const types = ['full_attention', 'sliding_attention', 'full_attention', 'full_attention', 'sliding_attention', 'full_attention', 'full_attention', 'full_attention'];
  assert.deepEqual(parse({ ...OLMO3, sliding_window: 32, layer_types: types }).slidingWindows, [null, 32, null, null, 32, null, null, null]);
});

test("OLMo 3's rope_scaling scales the full-attention layers only; the sliding ones keep theta 5e5 whatever the top-level rope_theta", () => {
  const yarn = { rope_type: 'yarn', factor: 8.0, original_max_position_embeddings: 8192, attention_factor: 1.2, beta_fast: 32, beta_slow: 1 };
  const config = parse({ ...OLMO3, rope_theta: 10000, rope_scaling: yarn });
  assert.equal(config.fullRope.ropeTheta, 10000);
  assert.equal(config.fullRope.ropeScaling.type, 'yarn');
  assert.deepEqual(config.slidingRope, { ropeTheta: 500000, ropeScaling: { type: 'default' } });
  assert.equal(config.contextLength, 65536);
});

test("OLMo 3's rope_parameters per layer type: an entry without rope_theta takes the top-level one for full layers, 5e5 for sliding ones", () => {
  const config = parse({ ...OLMO3, rope_theta: 1000, rope_parameters: { full_attention: { rope_type: 'linear', factor: 2.0 }, sliding_attention: { rope_type: 'default' } } });
  assert.deepEqual(config.fullRope, { ropeTheta: 1000, ropeScaling: { type: 'linear', factor: 2 } });
  assert.deepEqual(config.slidingRope, { ropeTheta: 500000, ropeScaling: { type: 'default' } });
  const named = parse({ ...OLMO3, rope_parameters: { sliding_attention: { rope_type: 'default', rope_theta: 100 } } });
  assert.deepEqual(named.fullRope, { ropeTheta: 500000, ropeScaling: { type: 'default' } });
  assert.equal(named.slidingRope?.ropeTheta, 100);
});

test('OLMo 3 refuses a single rope_parameters dict (transformers ignores it), unknown layer types, layer_types of the wrong length, and dynamic RoPE', () => {
  const rejects = (json: Record<string, unknown>, ...fragments: string[]) => assertInvalidModel(() => parse(json), ...fragments);
  rejects({ ...OLMO3, rope_parameters: { rope_type: 'linear', factor: 2.0, rope_theta: 1000 } }, 'olmo3 reads rope_parameters per layer type');
  rejects({ ...OLMO3, rope_parameters: { chunked_attention: { rope_type: 'default' } } }, 'unknown layer types "chunked_attention"');
  rejects({ ...OLMO3, layer_types: ['full_attention'] }, 'layer_types', '8 layers');
  rejects({ ...OLMO3, rope_scaling: { rope_type: 'dynamic', factor: 2.0 } }, 'dynamic RoPE is not supported for olmo3');
  rejects({ ...OLMO3, rope_parameters: { sliding_attention: { rope_type: 'dynamic', factor: 2.0 } } }, 'dynamic RoPE is not supported for olmo3');
});

test('an OLMo layer has no pre-norms: q/k norms over the whole projections, and norms after attention and the MLP', () => {
  const small = { ...OLMO2_7B, hidden_size: 64, intermediate_size: 96, num_attention_heads: 4, num_key_value_heads: 2, num_hidden_layers: 1, vocab_size: 128 };
  const shapes = Object.fromEntries(createModel(parseModelArchitecture(small, 'test/config.json'), 64).parameters().map((p) => [p.name, p.shape]));
  assert.deepEqual(shapes['model.layers.0.self_attn.q_norm.weight'], [64]);
  assert.deepEqual(shapes['model.layers.0.self_attn.k_norm.weight'], [32]);
  assert.deepEqual(shapes['model.layers.0.post_attention_layernorm.weight'], [64]);
  assert.deepEqual(shapes['model.layers.0.post_feedforward_layernorm.weight'], [64]);
  assert.equal(shapes['model.layers.0.input_layernorm.weight'], undefined);
  assert.equal(shapes['model.layers.0.self_attn.o_proj.bias'], undefined);
  const biased = createModel(parseModelArchitecture({ ...small, attention_bias: true }, 'test/config.json'), 64).parameters().map((p) => p.name);
  for (const proj of ['q', 'k', 'v', 'o']) assert.ok(biased.includes(`model.layers.0.self_attn.${proj}_proj.bias`), proj);
});

/** An EXAONE-4.0-32B-shaped config.json: layer_types listed, the pattern as a string. */
const EXAONE4_32B = {
  architectures: ['Exaone4ForCausalLM'],
  bos_token_id: 1,
  eos_token_id: 361,
  head_dim: 128,
  hidden_act: 'silu',
  hidden_size: 5120,
  intermediate_size: 27392,
  layer_types: ['sliding_attention', 'sliding_attention', 'sliding_attention', 'full_attention'],
  max_position_embeddings: 131072,
  model_type: 'exaone4',
  num_attention_heads: 40,
  num_hidden_layers: 4,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-5,
  rope_scaling: { factor: 16.0, high_freq_factor: 4.0, low_freq_factor: 1.0, original_max_position_embeddings: 8192, rope_type: 'llama3' },
  rope_theta: 1000000,
  sliding_window: 4096,
  sliding_window_pattern: 'LLLG',
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
  vocab_size: 102400,
};

test('EXAONE 4: per-head q/k norms, its sliding layers rotate and its full layers are NoPE', () => {
  const config = parse(EXAONE4_32B);
  assert.equal(config.qkNormOver, 'head');
  assert.deepEqual(config.slidingWindows, [4096, 4096, 4096, null]);
  assert.deepEqual(config.ropeLayers, [true, true, true, false]);
  assert.equal(config.fullRope.ropeScaling.type, 'llama3');
  assert.equal(config.attentionBias, false);
  assert.equal(parse({ ...EXAONE4_32B, attention_bias: true }).attentionBias, false, 'Exaone4Config has no attention_bias');
  const shapes = Object.fromEntries(createModel(parseModelArchitecture({ ...EXAONE4_32B, hidden_size: 64, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 16, vocab_size: 64 }, 'test/config.json'), 64).parameters().map((p) => [p.name, p.shape]));
  assert.deepEqual([shapes['model.layers.0.self_attn.q_norm.weight'], shapes['model.layers.0.self_attn.k_norm.weight']], [[16], [16]]);
});

test('EXAONE 4 without a window attends globally with RoPE on every layer; without layer_types it slides all but every sliding_window_pattern-th', () => {
  const { layer_types: _types, sliding_window_pattern: _pattern, ...bare } = EXAONE4_32B;
  const unwindowed = parse({ ...EXAONE4_32B, sliding_window: null });
  assert.deepEqual(unwindowed.slidingWindows, [null, null, null, null]);
  assert.deepEqual(unwindowed.ropeLayers, [true, true, true, true]);
  assert.deepEqual(parse(bare).slidingWindows, [4096, 4096, 4096, null]);
  assert.deepEqual(parse({ ...bare, sliding_window_pattern: 2, sliding_window: 16 }).slidingWindows, [16, null, 16, null]);
  assertInvalidModel(() => parse({ ...bare, sliding_window_pattern: 'LLLG' }), 'sliding_window_pattern "LLLG" is a string', 'layer_types');
});
