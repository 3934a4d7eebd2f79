import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parameterCount } from '../bench/roofline.ts';
import type { OlmoeConfig } from './olmoe.ts';
import { createModel, parseModelArchitecture } from './registry.ts';
import { assertInvalidModel } from '../../test/helpers/invalid-model.ts';

const parse = (json: Record<string, unknown>) => parseModelArchitecture(json, 'test/config.json').config as OlmoeConfig;

/** OLMoE-1B-7B-0924's config.json shape. */
const OLMOE = {
  architectures: ['OlmoeForCausalLM'],
  model_type: 'olmoe',
  hidden_size: 2048,
  intermediate_size: 1024,
  num_hidden_layers: 16,
  num_attention_heads: 16,
  num_key_value_heads: 16,
  num_experts: 64,
  num_experts_per_tok: 8,
  norm_topk_prob: false,
  clip_qkv: null,
  vocab_size: 50304,
  max_position_embeddings: 4096,
  rope_theta: 10000,
  rms_norm_eps: 1e-5,
  tie_word_embeddings: false,
  bos_token_id: null,
  eos_token_id: 50279,
};

test('OLMoE: q/k normed over the whole projections before RoPE, 64 experts 1024 wide, top 8 of a softmax left unnormalized', () => {
  const c = parse(OLMOE);
  assert.deepEqual([c.hiddenSize, c.numLayers, c.numHeads, c.numKvHeads, c.headDim, c.vocabSize], [2048, 16, 16, 16, 128, 50304]);
  assert.deepEqual([c.qkNorm, c.qkNormOver, c.qkNormAfterRope, c.attentionBias, c.outputBias], [true, 'projection', false, false, false]);
  assert.deepEqual([c.intermediateSize, c.numExperts, c.numExpertsPerToken, c.normTopkProb], [1024, 64, 8, false]);
  assert.deepEqual([c.ropeTheta, c.rmsNormEps, c.contextLength], [1e4, 1e-5, 4096]);
  assert.deepEqual(c.slidingWindows, new Array(16).fill(null));
});

test("OLMoE reads transformers' parameter count and the Hub's per-expert names, q_norm as wide as hidden_size", () => {
  const model = createModel(parseModelArchitecture(OLMOE, 'test/config.json'), 64);
  // OlmoeForCausalLM.from_config(this config) on the meta device holds 6,919,161,856 parameters.
  assert.equal(parameterCount(model), 6_919_161_856);
  const shapes = new Map(model.parameters().map((p) => [p.name, p.shape]));
  assert.deepEqual(shapes.get('model.layers.0.self_attn.q_norm.weight'), [2048]);
  assert.deepEqual(shapes.get('model.layers.15.mlp.gate.weight'), [64, 2048]);
  assert.deepEqual(shapes.get('model.layers.15.mlp.experts.63.down_proj.weight'), [2048, 1024]);
});

test("OLMoE takes OlmoeConfig's defaults, num_local_experts for num_experts, and refuses what its attention cannot run", () => {
  const c = parse({ model_type: 'olmoe', vocab_size: 64, hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 4 });
  assert.deepEqual([c.numKvHeads, c.maxPositionEmbeddings, c.rmsNormEps, c.intermediateSize, c.numExperts, c.numExpertsPerToken, c.normTopkProb], [4, 4096, 1e-5, 2048, 64, 8, false]);
  assert.equal(parse({ ...OLMOE, num_experts: undefined, num_local_experts: 32 }).numExperts, 32);
  assertInvalidModel(() => parse({ ...OLMOE, clip_qkv: 8 }), 'clip_qkv', 'olmoe');
  assertInvalidModel(() => parse({ ...OLMOE, head_dim: 64 }), 'head_dim', 'olmoe');
  assertInvalidModel(() => parse({ ...OLMOE, num_experts_per_tok: 65 }), 'num_experts_per_tok', '64');
});
