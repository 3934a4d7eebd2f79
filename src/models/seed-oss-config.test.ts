import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { LlamaConfig } from './llama.ts';
import { parseModelArchitecture } from './registry.ts';

const parse = (json: Record<string, unknown>) => parseModelArchitecture(json, 'test/config.json').config as LlamaConfig;

/** A Seed-OSS-36B-shaped config.json. */
const SEED_OSS_36B = {
  architectures: ['SeedOssForCausalLM'],
  attention_bias: true,
  attention_dropout: 0.1,
  attention_out_bias: false,
  bos_token_id: 0,
  eos_token_id: 2,
  head_dim: 128,
  hidden_act: 'silu',
  hidden_size: 5120,
  intermediate_size: 27648,
  max_position_embeddings: 524288,
  mlp_bias: false,
  model_type: 'seed_oss',
  num_attention_heads: 80,
  num_hidden_layers: 64,
  num_key_value_heads: 8,
  residual_dropout: 0.1,
  rms_norm_eps: 1e-6,
  rope_scaling: { rope_type: 'default' },
  rope_theta: 10000000.0,
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
  vocab_size: 155136,
};

test('Seed-OSS is Llama with q/k/v biases and an o bias of its own key', () => {
  const config = parse(SEED_OSS_36B);
  assert.deepEqual([config.attentionBias, config.outputBias, config.mlpBias], [true, false, false]);
  assert.deepEqual([config.headDim, config.numHeads, config.numKvHeads, config.ropeTheta, config.contextLength], [128, 80, 8, 1e7, 524288]);
  assert.deepEqual(config.slidingWindows, new Array(64).fill(null));
  assert.equal(parse({ ...SEED_OSS_36B, attention_out_bias: true }).outputBias, true);
});

test("SeedOssConfig's defaults: q/k/v biased, head_dim 128 whatever hidden / heads, 524288 positions", () => {
  const { attention_bias: _b, head_dim: _h, max_position_embeddings: _m, ...bare } = SEED_OSS_36B;
  const config = parse({ ...bare, hidden_size: 64, num_attention_heads: 4, num_key_value_heads: 2 });
  assert.deepEqual([config.attentionBias, config.outputBias], [true, false]);
  assert.equal(config.headDim, 128);
  assert.equal(config.maxPositionEmbeddings, 524288);
});
