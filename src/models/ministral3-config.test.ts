import assert from 'node:assert/strict';
import { test } from 'node:test';
import { assertInvalidModel } from '../../test/helpers/invalid-model.ts';
import type { LlamaConfig } from './llama.ts';
import { parseModelArchitecture } from './registry.ts';

const parse = (json: Record<string, unknown>) => parseModelArchitecture(json, 'test/config.json').config as LlamaConfig;

/** The text_config of a Ministral-3-8B-shaped checkpoint, as transformers 5 writes it. */
const MINISTRAL3_8B = {
  model_type: 'ministral3',
  dtype: 'bfloat16',
  head_dim: 128,
  hidden_act: 'silu',
  hidden_size: 4096,
  intermediate_size: 14336,
  max_position_embeddings: 262144,
  num_attention_heads: 32,
  num_hidden_layers: 34,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-5,
  rope_parameters: {
    beta_fast: 32.0,
    beta_slow: 1.0,
    factor: 16.0,
    llama_4_scaling_beta: 0.1,
    mscale: 1.0,
    mscale_all_dim: 1.0,
    original_max_position_embeddings: 16384,
    rope_theta: 1000000.0,
    rope_type: 'yarn',
  },
  sliding_window: null,
  tie_word_embeddings: false,
  vocab_size: 131072,
};

test('Ministral 3 is Mistral with YaRN and every query scaled by 1 + β · ln(1 + ⌊p / original⌋), positions counted from 0', () => {
  const c = parse(MINISTRAL3_8B);
  assert.deepEqual(c.queryTemperature, { floorScale: 16384, attnScale: 0.1, positionOffset: 0 });
  assert.deepEqual(c.ropeScaling, { type: 'yarn', factor: 16, originalMaxPositionEmbeddings: 16384, betaFast: 32, betaSlow: 1, attentionFactor: 1, truncate: true });
  assert.equal(c.ropeTheta, 1e6);
  assert.deepEqual(new Set(c.slidingWindows), new Set([null]));
  assert.equal(c.attentionBias || c.outputBias || c.qkNorm, false);
  assert.equal(parse({ ...MINISTRAL3_8B, model_type: 'mistral' }).queryTemperature, null, 'mistral has no query scale');
});

test("Ministral3Config's defaults: its YaRN rope_parameters when the config gives none, head_dim 128, no window; a given window slides every layer", () => {
  const { rope_parameters: _, head_dim: __, sliding_window: ___, ...bare } = MINISTRAL3_8B;
  const c = parse({ ...bare, num_hidden_layers: 2 });
  assert.equal(c.headDim, 128);
  assert.deepEqual(c.slidingWindows, [null, null]);
  assert.deepEqual(c.queryTemperature, { floorScale: 16384, attnScale: 0.1, positionOffset: 0 });
  assert.equal(c.ropeScaling.type, 'yarn');
  assert.equal(c.ropeTheta, 1e6);
  // A 4.x rope_scaling replaces the default as rope_parameters would.
  const linear = parse({ ...bare, rope_scaling: { rope_type: 'linear', factor: 2, original_max_position_embeddings: 64, llama_4_scaling_beta: 0.2 } });
  assert.deepEqual(linear.ropeScaling, { type: 'linear', factor: 2 });
  assert.deepEqual(linear.queryTemperature, { floorScale: 64, attnScale: 0.2, positionOffset: 0 });
  assert.deepEqual(parse({ ...MINISTRAL3_8B, num_hidden_layers: 2, sliding_window: 4096 }).slidingWindows, [4096, 4096]);
});

test('the query scale reads the scaling\'s original context, which a top-level original_max_position_embeddings overrides, as transformers moves it into rope_parameters', () => {
  assert.equal(parse({ ...MINISTRAL3_8B, original_max_position_embeddings: 8192 }).queryTemperature?.floorScale, 8192);
  const { original_max_position_embeddings: _, ...rope } = MINISTRAL3_8B.rope_parameters;
  assert.equal(parse({ ...MINISTRAL3_8B, rope_parameters: rope }).queryTemperature?.floorScale, 262144, 'YaRN without one: max_position_embeddings');
});

test('Ministral 3 without llama_4_scaling_beta, or with a RoPE type that has no original context, is refused by key (transformers fails on both)', () => {
  const { llama_4_scaling_beta: _, ...noBeta } = MINISTRAL3_8B.rope_parameters;
  assertInvalidModel(() => parse({ ...MINISTRAL3_8B, rope_parameters: noBeta }), '"llama_4_scaling_beta" is missing');
  assertInvalidModel(() => parse({ ...MINISTRAL3_8B, rope_parameters: { rope_type: 'default', rope_theta: 1e6, llama_4_scaling_beta: 0.1 } }), '"original_max_position_embeddings" is missing');
});

test('a Mistral 3 vision-language checkpoint whose text_config is ministral3 is served as Ministral 3', () => {
  const wrapped = {
    model_type: 'mistral3',
    architectures: ['Mistral3ForConditionalGeneration'],
    text_config: { ...MINISTRAL3_8B, num_hidden_layers: 2 },
    vision_config: { model_type: 'pixtral' },
  };
  const c = parse(wrapped);
  assert.equal(c.modelType, 'ministral3');
  assert.deepEqual(c.queryTemperature, { floorScale: 16384, attnScale: 0.1, positionOffset: 0 });
});
