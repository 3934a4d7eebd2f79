import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parameterCount } from '../bench/roofline.ts';
import type { MinimaxM2Config } from './minimax-m2.ts';
import { createModel, parseModelArchitecture } from './registry.ts';
import { assertInvalidModel } from '../../test/helpers/invalid-model.ts';

const parse = (json: Record<string, unknown>) => parseModelArchitecture(json, 'test/config.json').config as MinimaxM2Config;

function rejects(json: Record<string, unknown>, ...fragments: string[]): void {
  assertInvalidModel(() => parseModelArchitecture(json, 'test/config.json'), ...fragments);
}

/** MiniMax-M2's config.json shape (transformers' MiniMaxM2Config defaults are its values), with the keys of MiniMax's own code that transformers ignores. */
const MINIMAX_M2 = {
  architectures: ['MiniMaxM2ForCausalLM'],
  model_type: 'minimax_m2',
  hidden_size: 3072,
  intermediate_size: 1536,
  num_hidden_layers: 62,
  num_attention_heads: 48,
  num_key_value_heads: 8,
  head_dim: 128,
  rotary_dim: 64,
  rope_theta: 5000000,
  max_position_embeddings: 196608,
  num_local_experts: 256,
  num_experts_per_tok: 8,
  rms_norm_eps: 1e-6,
  vocab_size: 200064,
  hidden_act: 'silu',
  tie_word_embeddings: false,
  use_qk_norm: true,
  qk_norm_type: 'per_layer',
  scoring_func: 'sigmoid',
  use_routing_bias: true,
  shared_intermediate_size: 0,
  bos_token_id: 200034,
  eos_token_id: 200020,
};

test('MiniMax-M2: GQA 48/8 of 128, q/k normed over the whole projections, rotary_dim 64 of each head, sigmoid + bias routing over 256 experts', () => {
  const c = parse(MINIMAX_M2);
  assert.deepEqual([c.hiddenSize, c.numLayers, c.numHeads, c.numKvHeads, c.headDim, c.rotaryDim, c.vocabSize], [3072, 62, 48, 8, 128, 64, 200064]);
  assert.deepEqual([c.attentionBias, c.outputBias, c.qkNorm, c.qkNormOver, c.qkNormAfterRope], [false, false, true, 'projection', false]);
  assert.deepEqual([c.ropeTheta, c.ropeScaling, c.rmsNormEps, c.contextLength], [5e6, { type: 'default' }, 1e-6, 196608]);
  assert.deepEqual([c.intermediateSize, c.numExperts, c.numExpertsPerToken], [1536, 256, 8]);
  assert.deepEqual(c.slidingWindows, new Array(62).fill(null));
});

test("MiniMax-M2 reads transformers' parameter count and names: the q/k norms as wide as the projections, the bias beside the router", () => {
  const model = createModel(parseModelArchitecture(MINIMAX_M2, 'test/config.json'), 64);
  // MiniMaxM2ForCausalLM.from_config(this config) on the meta device holds 228,689,748,992 parameters;
  // Keel's list adds the 62 layers' e_score_correction_bias buffers (256 each), which the checkpoint stores.
  assert.equal(parameterCount(model), 228_689_748_992 + 62 * 256);
  const shapes = new Map(model.parameters().map((p) => [p.name, p.shape]));
  assert.deepEqual(shapes.get('model.layers.0.self_attn.q_norm.weight'), [48 * 128]);
  assert.deepEqual(shapes.get('model.layers.0.self_attn.k_norm.weight'), [8 * 128]);
  assert.deepEqual(shapes.get('model.layers.61.block_sparse_moe.e_score_correction_bias'), [256]);
  assert.deepEqual(shapes.get('model.layers.0.block_sparse_moe.experts.255.w2.weight'), [3072, 1536]);
});

test("MiniMax-M2's rotating dims: rotary_dim, unless a partial_rotary_factor (top level or in rope_parameters) overrides it; the whole head without either", () => {
  const { rotary_dim: _, ...withoutRotaryDim } = MINIMAX_M2;
  assert.equal(parse(withoutRotaryDim).rotaryDim, 128);
  assert.equal(parse({ ...MINIMAX_M2, partial_rotary_factor: 0.25 }).rotaryDim, 32);
  assert.equal(parse({ ...MINIMAX_M2, partial_rotary_factor: 0.25, rope_parameters: { rope_type: 'default', rope_theta: 1e4, partial_rotary_factor: 0.75 } }).rotaryDim, 96);
  rejects({ ...MINIMAX_M2, rotary_dim: 63 }, 'partial_rotary_factor', 'even');
});

test("MiniMax-M2 takes MiniMaxM2Config's defaults for the keys a config leaves out", () => {
  const c = parse({ model_type: 'minimax_m2', vocab_size: 64, hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 16 });
  assert.deepEqual([c.numKvHeads, c.headDim, c.rotaryDim, c.ropeTheta, c.rmsNormEps, c.maxPositionEmbeddings], [8, 128, 128, 5e6, 1e-6, 196608]);
  assert.deepEqual([c.intermediateSize, c.numExperts, c.numExpertsPerToken], [1536, 256, 8]);
});

test('MiniMax-M2 refuses, by key, what transformers would not run as the checkpoint asks', () => {
  rejects({ ...MINIMAX_M2, qk_norm_type: 'per_head' }, 'qk_norm_type', 'per_head', 'minimax_m2');
  rejects({ ...MINIMAX_M2, use_qk_norm: false }, 'use_qk_norm');
  rejects({ ...MINIMAX_M2, scoring_func: 'softmax' }, 'scoring_func', 'softmax');
  rejects({ ...MINIMAX_M2, use_routing_bias: false }, 'use_routing_bias');
  rejects({ ...MINIMAX_M2, shared_intermediate_size: 1536 }, 'shared_intermediate_size');
  rejects({ ...MINIMAX_M2, num_experts_per_tok: 257 }, 'num_experts_per_tok', '256');
});
