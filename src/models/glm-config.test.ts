import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parameterCount } from '../bench/roofline.ts';
import type { LlamaConfig } from './llama.ts';
import { createModel, parseModelArchitecture } from './registry.ts';
import { assertInvalidModel } from '../../test/helpers/invalid-model.ts';

const parse = (json: Record<string, unknown>) => parseModelArchitecture(json, 'test/config.json').config as LlamaConfig;
const parameterNames = (json: Record<string, unknown>) =>
  createModel(parseModelArchitecture({ ...json, num_hidden_layers: 1 }, 'test/config.json'), 64)
    .parameters()
    .map((p) => p.name);

/** THUDM/glm-4-9b-chat-hf's config.json shape (GlmForCausalLM, transformers 4.x keys). */
const GLM4_9B_CHAT_HF = {
  architectures: ['GlmForCausalLM'],
  model_type: 'glm',
  attention_bias: true,
  head_dim: 128,
  hidden_act: 'silu',
  hidden_size: 4096,
  intermediate_size: 13696,
  max_position_embeddings: 131072,
  num_attention_heads: 32,
  num_hidden_layers: 40,
  num_key_value_heads: 2,
  partial_rotary_factor: 0.5,
  rms_norm_eps: 1.5625e-7,
  rope_theta: 10000.0,
  tie_word_embeddings: false,
  vocab_size: 151552,
  eos_token_id: [151329, 151336, 151338],
  pad_token_id: 151329,
  torch_dtype: 'bfloat16',
};

/** GLM-4-32B-0414's config.json shape (Glm4ForCausalLM): GLM-4's keys, 61 layers of 6144. */
const GLM4_32B_0414 = {
  ...GLM4_9B_CHAT_HF,
  architectures: ['Glm4ForCausalLM'],
  model_type: 'glm4',
  hidden_size: 6144,
  intermediate_size: 23040,
  max_position_embeddings: 32768,
  num_attention_heads: 48,
  num_hidden_layers: 61,
  rms_norm_eps: 1e-5,
};

test('GLM-4-9B-chat-hf (glm): GQA 32/2 of 128, the leading 64 dims rotating in interleaved pairs, q/k/v biases only, fused gate_up', () => {
  const c = parse(GLM4_9B_CHAT_HF);
  assert.deepEqual([c.hiddenSize, c.numLayers, c.numHeads, c.numKvHeads, c.headDim, c.rotaryDim, c.vocabSize], [4096, 40, 32, 2, 128, 64, 151552]);
  assert.deepEqual([c.interleavedRope, c.fusedGateUp, c.tieWordEmbeddings, c.qkNorm], [true, true, false, false]);
  assert.deepEqual([c.attentionBias, c.outputBias, c.mlpBias], [true, false, false]);
  assert.deepEqual([c.ropeTheta, c.ropeScaling, c.rmsNormEps, c.contextLength], [1e4, { type: 'default' }, 1.5625e-7, 131072]);
  assert.deepEqual(new Set(c.slidingWindows), new Set([null]));
  assert.deepEqual([c.normNames.attentionOutput, c.normNames.mlpOutput], [undefined, undefined]);
});

test('glm4 (GLM-4-0414, GLM-Z1) is glm with sandwich norms on attention\'s and the MLP\'s outputs', () => {
  const c = parse(GLM4_32B_0414);
  assert.deepEqual([c.numHeads, c.numKvHeads, c.headDim, c.rotaryDim, c.interleavedRope, c.fusedGateUp], [48, 2, 128, 64, true, true]);
  assert.deepEqual([c.normNames.attentionOutput, c.normNames.mlpOutput], ['post_self_attn_layernorm', 'post_mlp_layernorm']);
  const layer = (model: Record<string, unknown>) => parameterNames(model).filter((n) => n.startsWith('model.layers.0.')).sort();
  const glm = ['input_layernorm.weight', 'post_attention_layernorm.weight', 'mlp.gate_up_proj.weight', 'mlp.down_proj.weight', 'self_attn.o_proj.weight']
    .concat(['q', 'k', 'v'].flatMap((p) => [`self_attn.${p}_proj.weight`, `self_attn.${p}_proj.bias`]))
    .map((n) => `model.layers.0.${n}`);
  assert.deepEqual(layer(GLM4_9B_CHAT_HF), [...glm].sort());
  assert.deepEqual(layer(GLM4_32B_0414), [...glm, 'model.layers.0.post_self_attn_layernorm.weight', 'model.layers.0.post_mlp_layernorm.weight'].sort());
});

test("GLM's and GLM-4's transformers parameter counts: gate_up_proj is 2 × intermediate rows, biases on q/k/v only", () => {
  // GlmForCausalLM / Glm4ForCausalLM.from_config(these configs) on the meta device.
  assert.equal(parameterCount(createModel(parseModelArchitecture(GLM4_9B_CHAT_HF, 'test/config.json'), 64)), 9_399_951_360);
  assert.equal(parameterCount(createModel(parseModelArchitecture(GLM4_32B_0414, 'test/config.json'), 64)), 32_566_487_552);
});

test("glm and glm4 take GlmConfig's / Glm4Config's defaults for the keys a config leaves out", () => {
  for (const model_type of ['glm', 'glm4']) {
    const c = parse({ model_type, vocab_size: 64, hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 4 });
    assert.deepEqual(
      [c.numKvHeads, c.headDim, c.rotaryDim, c.rmsNormEps, c.maxPositionEmbeddings, c.intermediateSize, c.attentionBias, c.outputBias, c.tieWordEmbeddings],
      [2, 128, 64, 1.5625e-7, 131072, 13696, true, false, false],
      model_type,
    );
  }
  const unbiased = parse({ ...GLM4_9B_CHAT_HF, attention_bias: false });
  assert.deepEqual([unbiased.attentionBias, unbiased.outputBias], [false, false]);
});

test("the RoPE dict's partial_rotary_factor wins over the top-level one (Glm4Config writes both); an odd rotary dim is refused by name", () => {
  assert.equal(parse({ ...GLM4_32B_0414, rope_parameters: { rope_type: 'default', rope_theta: 5e5, partial_rotary_factor: 0.75 } }).rotaryDim, 96);
  assert.equal(parse({ ...GLM4_32B_0414, partial_rotary_factor: 1 }).rotaryDim, 128);
  assertInvalidModel(() => parse({ ...GLM4_9B_CHAT_HF, head_dim: 20, partial_rotary_factor: 0.25 }), 'partial_rotary_factor');
});
