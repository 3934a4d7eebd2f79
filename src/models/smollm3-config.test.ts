import assert from 'node:assert/strict';
import { test } from 'node:test';
import { assertInvalidModel } from '../../test/helpers/invalid-model.ts';
import type { LlamaConfig } from './llama.ts';
import { createModel, parseModelArchitecture } from './registry.ts';

const parse = (json: Record<string, unknown>) => parseModelArchitecture(json, 'test/config.json').config as LlamaConfig;

/** A SmolLM3-3B-shaped config.json: every fourth layer NoPE, listed. */
const SMOLLM3_3B = {
  architectures: ['SmolLM3ForCausalLM'],
  attention_bias: false,
  bos_token_id: 128000,
  eos_token_id: 128012,
  hidden_act: 'silu',
  hidden_size: 2048,
  intermediate_size: 11008,
  max_position_embeddings: 65536,
  mlp_bias: false,
  model_type: 'smollm3',
  no_rope_layers: Array.from({ length: 36 }, (_, i) => ((i + 1) % 4 === 0 ? 0 : 1)),
  num_attention_heads: 16,
  num_hidden_layers: 36,
  num_key_value_heads: 4,
  rms_norm_eps: 1e-6,
  rope_theta: 5000000.0,
  sliding_window: null,
  use_sliding_window: false,
  torch_dtype: 'bfloat16',
  vocab_size: 128256,
};

const TINY = { model_type: 'smollm3', vocab_size: 100, hidden_size: 64, intermediate_size: 128, num_hidden_layers: 4, num_attention_heads: 4 };

test('SmolLM3 is Llama with NoPE layers: no_rope_layers 0 marks a layer that skips RoPE', () => {
  const config = parse(SMOLLM3_3B);
  assert.deepEqual(config.ropeLayers, SMOLLM3_3B.no_rope_layers.map((f) => f === 1));
  assert.deepEqual(config.slidingWindows, new Array(36).fill(null));
  assert.equal(config.ropeTheta, 5e6);
  assert.equal(config.headDim, 128);
  assert.equal(config.tieWordEmbeddings, true);
});

test("SmolLM3Config's defaults: RoPE theta 2e6, a NoPE layer every no_rope_layer_interval (4), a tied LM head", () => {
  const config = parse(TINY);
  assert.equal(config.ropeTheta, 2e6);
  assert.deepEqual(config.ropeLayers, [true, true, true, false]);
  assert.deepEqual(parse({ ...TINY, no_rope_layer_interval: 2 }).ropeLayers, [true, false, true, false]);
  assert.equal(config.tieWordEmbeddings, true);
  assert.equal(parse({ ...TINY, tie_word_embeddings: false }).tieWordEmbeddings, false);
});

test('SmolLM3 slides its NoPE layers when use_sliding_window and a window are set, and layer_types slide whatever use_sliding_window says', () => {
  assert.deepEqual(parse({ ...TINY, no_rope_layer_interval: 2, use_sliding_window: true, sliding_window: 16 }).slidingWindows, [null, 16, null, 16]);
  assert.deepEqual(parse({ ...TINY, no_rope_layer_interval: 2, use_sliding_window: false, sliding_window: 16 }).slidingWindows, [null, null, null, null]);
  assert.deepEqual(parse({ ...TINY, no_rope_layer_interval: 2, use_sliding_window: true }).slidingWindows, [null, null, null, null]);
  const types = ['sliding_attention', 'full_attention', 'full_attention', 'sliding_attention'];
  assert.deepEqual(parse({ ...TINY, use_sliding_window: false, sliding_window: 8, layer_types: types }).slidingWindows, [8, null, null, 8]);
});

test('SmolLM3 reads attention_bias (q, k, v and o) and mlp_bias as Llama does', () => {
  const config = parse({ ...TINY, attention_bias: true, mlp_bias: true });
  assert.deepEqual([config.attentionBias, config.outputBias, config.mlpBias], [true, true, true]);
});

test('SmolLM3 refuses no_rope_layers of the wrong length or values, and LongRoPE beside NoPE layers', () => {
  assertInvalidModel(() => parse({ ...TINY, no_rope_layers: [1, 0] }), 'no_rope_layers', '4 layers');
  assertInvalidModel(() => parse({ ...TINY, no_rope_layers: [1, 2, 1, 1] }), 'no_rope_layers');
  const longrope = { rope_type: 'longrope', short_factor: new Array(8).fill(1), long_factor: new Array(8).fill(2), original_max_position_embeddings: 32 };
  assertInvalidModel(() => createModel(parseModelArchitecture({ ...TINY, rope_parameters: { ...longrope, rope_theta: 1e4 } }, 'test/config.json'), 64), 'LongRoPE', 'one rotary embedding');
  // Every layer rotating: one table, so LongRoPE is fine.
  createModel(parseModelArchitecture({ ...TINY, no_rope_layers: [1, 1, 1, 1], rope_parameters: { ...longrope, rope_theta: 1e4 } }, 'test/config.json'), 64);
});
