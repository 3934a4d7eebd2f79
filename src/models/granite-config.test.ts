import assert from 'node:assert/strict';
import { test } from 'node:test';
import { assertInvalidModel } from '../../test/helpers/invalid-model.ts';
import type { LlamaConfig } from './llama.ts';
import { parseModelArchitecture } from './registry.ts';

const parse = (json: Record<string, unknown>) => parseModelArchitecture(json, 'test/config.json').config as LlamaConfig;

/** A Granite-3.1-8B-shaped config.json. */
const GRANITE_8B = {
  architectures: ['GraniteForCausalLM'],
  attention_bias: false,
  attention_multiplier: 0.0078125,
  bos_token_id: 0,
  embedding_multiplier: 12.0,
  eos_token_id: 0,
  hidden_act: 'silu',
  hidden_size: 4096,
  intermediate_size: 12800,
  logits_scaling: 16.0,
  max_position_embeddings: 131072,
  mlp_bias: false,
  model_type: 'granite',
  num_attention_heads: 32,
  num_hidden_layers: 40,
  num_key_value_heads: 8,
  residual_multiplier: 0.22,
  rms_norm_eps: 1e-5,
  rope_theta: 10000000.0,
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
  vocab_size: 49155,
};

test('Granite is Llama with its four multipliers', () => {
  const config = parse(GRANITE_8B);
  assert.deepEqual(config.multipliers, { embedding: 12, residual: 0.22, attention: 0.0078125, logits: 16 });
  assert.equal(config.headDim, 128);
  assert.equal(config.ropeTheta, 1e7);
  assert.equal(config.tieWordEmbeddings, true);
  assert.deepEqual(config.slidingWindows, new Array(40).fill(null));
});

test("GraniteConfig's defaults: every multiplier 1 (the softmax scale too, not head_dim^-0.5), 2048 positions, biases by attention_bias and mlp_bias", () => {
  const { attention_multiplier: _a, embedding_multiplier: _e, logits_scaling: _l, residual_multiplier: _r, max_position_embeddings: _m, ...bare } = GRANITE_8B;
  const config = parse({ ...bare, attention_bias: true, mlp_bias: true });
  assert.deepEqual(config.multipliers, { embedding: 1, residual: 1, attention: 1, logits: 1 });
  assert.equal(config.maxPositionEmbeddings, 2048);
  assert.deepEqual([config.attentionBias, config.outputBias, config.mlpBias], [true, true, true]);
});

test('the other Llama-family types have no multipliers', () => {
  assert.equal(parse({ ...GRANITE_8B, model_type: 'llama' }).multipliers, null);
});

test('Granite refuses a logits_scaling that is not positive, naming it', () => {
  assertInvalidModel(() => parse({ ...GRANITE_8B, logits_scaling: 0 }), '"logits_scaling" must be a positive number');
  assertInvalidModel(() => parse({ ...GRANITE_8B, residual_multiplier: 'x' }), '"residual_multiplier" must be a number');
});
