import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parameterCount } from '../bench/roofline.ts';
import type { LlamaConfig } from './llama.ts';
import { createModel, parseModelArchitecture } from './registry.ts';
import { assertInvalidModel } from '../../test/helpers/invalid-model.ts';

const parse = (json: Record<string, unknown>) => parseModelArchitecture(json, 'test/config.json').config as LlamaConfig;

/** ERNIE-4.5-0.3B's config.json shape, with keys of Baidu's own code that transformers ignores. */
const ERNIE_45_03B = {
  architectures: ['Ernie4_5ForCausalLM'],
  model_type: 'ernie4_5',
  hidden_size: 1024,
  intermediate_size: 3072,
  max_position_embeddings: 131072,
  num_attention_heads: 16,
  num_key_value_heads: 2,
  head_dim: 128,
  num_hidden_layers: 18,
  rms_norm_eps: 1e-5,
  rope_theta: 500000,
  tie_word_embeddings: true,
  use_bias: false,
  vocab_size: 103424,
  bos_token_id: 1,
  eos_token_id: 2,
  pad_token_id: 0,
  use_rmsnorm: true,
  torch_dtype: 'bfloat16',
};

test('ERNIE 4.5 dense: GQA 16/2 of 128, RoPE over interleaved pairs, tied, no biases unless use_bias', () => {
  const c = parse(ERNIE_45_03B);
  assert.deepEqual([c.hiddenSize, c.numLayers, c.numHeads, c.numKvHeads, c.headDim, c.rotaryDim, c.vocabSize], [1024, 18, 16, 2, 128, 128, 103424]);
  assert.deepEqual([c.interleavedRope, c.tieWordEmbeddings, c.qkNorm], [true, true, false]);
  assert.deepEqual([c.attentionBias, c.outputBias, c.mlpBias], [false, false, false]);
  assert.deepEqual([c.ropeTheta, c.ropeScaling, c.rmsNormEps, c.contextLength], [5e5, { type: 'default' }, 1e-5, 131072]);
  const biased = parse({ ...ERNIE_45_03B, use_bias: true });
  assert.deepEqual([biased.attentionBias, biased.outputBias, biased.mlpBias], [true, true, true]);
  // Llama's own bias keys are not ERNIE's: mlp_bias and attention_bias are ignored, as transformers ignores them.
  const llamaKeys = parse({ ...ERNIE_45_03B, mlp_bias: true, attention_bias: true });
  assert.deepEqual([llamaKeys.attentionBias, llamaKeys.mlpBias], [false, false]);
  assert.equal(parse({ ...ERNIE_45_03B, model_type: 'llama' }).interleavedRope, false, "Llama rotates rotate_half's halves");
});

test("ERNIE 4.5 takes Ernie4_5Config's defaults for the keys a config leaves out", () => {
  const c = parse({ model_type: 'ernie4_5', vocab_size: 64, hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 4 });
  assert.deepEqual([c.numKvHeads, c.headDim, c.ropeTheta, c.rmsNormEps, c.maxPositionEmbeddings, c.intermediateSize, c.tieWordEmbeddings], [2, 128, 5e5, 1e-5, 131072, 3072, true]);
});

test("ERNIE-4.5-0.3B reads transformers' parameter count, its biases where use_bias", () => {
  // Ernie4_5ForCausalLM.from_config(this config) on the meta device holds 360,748,032 parameters (the head tied).
  assert.equal(parameterCount(createModel(parseModelArchitecture(ERNIE_45_03B, 'test/config.json'), 64)), 360_748_032);
  const names = createModel(parseModelArchitecture({ ...ERNIE_45_03B, use_bias: true, num_hidden_layers: 1 }, 'test/config.json'), 64)
    .parameters()
    .map((p) => p.name)
    .filter((n) => n.endsWith('.bias'));
  const expected = ['q_proj', 'k_proj', 'v_proj', 'o_proj'].map((p) => `model.layers.0.self_attn.${p}.bias`).concat(['gate_proj', 'up_proj', 'down_proj'].map((p) => `model.layers.0.mlp.${p}.bias`));
  assert.deepEqual(names.sort(), expected.sort());
});

test('ERNIE 4.5 refuses a partial rotary factor by name (its RoPE rotates the whole head)', () => {
  assertInvalidModel(() => parse({ ...ERNIE_45_03B, partial_rotary_factor: 0.5 }), 'partial_rotary_factor');
});
