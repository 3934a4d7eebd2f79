import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parameterCount } from '../bench/roofline.ts';
import type { ErnieMoeConfig } from './ernie-moe.ts';
import { createModel, parseModelArchitecture } from './registry.ts';
import { assertInvalidModel } from '../../test/helpers/invalid-model.ts';

const parse = (json: Record<string, unknown>) => parseModelArchitecture(json, 'test/config.json').config as ErnieMoeConfig;

function rejects(json: Record<string, unknown>, ...fragments: string[]): void {
  assertInvalidModel(() => parseModelArchitecture(json, 'test/config.json'), ...fragments);
}

/** ERNIE-4.5-21B-A3B's config.json shape, with keys of Baidu's own code that transformers ignores. */
const ERNIE_45_21B = {
  architectures: ['Ernie4_5_MoeForCausalLM'],
  model_type: 'ernie4_5_moe',
  hidden_size: 2560,
  intermediate_size: 12288,
  max_position_embeddings: 131072,
  num_attention_heads: 20,
  num_key_value_heads: 4,
  num_hidden_layers: 28,
  rms_norm_eps: 1e-5,
  rope_theta: 500000,
  tie_word_embeddings: true,
  use_bias: false,
  vocab_size: 103424,
  moe_intermediate_size: 1536,
  moe_k: 6,
  moe_num_experts: 64,
  moe_num_shared_experts: 2,
  moe_layer_start_index: 1,
  moe_layer_end_index: 27,
  moe_layer_interval: 1,
  moe_gate: 'topk',
  moe_use_aux_free: true,
  bos_token_id: 1,
  eos_token_id: 2,
  pad_token_id: 0,
};

test('ERNIE-4.5-21B-A3B: GQA 20/4 of 128 with interleaved RoPE, layer 0 dense, then softmax + bias routing of 6 of 64 experts with 2 shared', () => {
  const c = parse(ERNIE_45_21B);
  assert.deepEqual([c.hiddenSize, c.numLayers, c.numHeads, c.numKvHeads, c.headDim, c.rotaryDim, c.vocabSize], [2560, 28, 20, 4, 128, 128, 103424]);
  assert.deepEqual([c.interleavedRope, c.tieWordEmbeddings, c.attentionBias, c.outputBias, c.qkNorm], [true, true, false, false, false]);
  assert.deepEqual([c.ropeTheta, c.rmsNormEps, c.intermediateSize], [5e5, 1e-5, 12288]);
  assert.deepEqual(c.sparseLayers, Array.from({ length: 28 }, (_, i) => i >= 1));
  assert.deepEqual(c.moe, {
    numExperts: 64,
    numExpertsPerToken: 6,
    expertIntermediateSize: 1536,
    sharedIntermediateSize: 3072,
    fusedExperts: false,
    routing: { topK: 6, scoring: 'softmax', selectionBias: true, groups: null, normalize: true, scale: 1 },
  });
});

test("ERNIE-4.5-21B-A3B reads transformers' parameter count, the bias as moe_statics stores it ([1, experts])", () => {
  const model = createModel(parseModelArchitecture(ERNIE_45_21B, 'test/config.json'), 64);
  // Ernie4_5_MoeForCausalLM.from_config(this config) on the meta device: 21,825,437,888 parameters
  // (the head tied; moe_statics' biases are parameters there too).
  assert.equal(parameterCount(model), 21_825_437_888);
  const shapes = new Map(model.parameters().map((p) => [p.name, p.shape]));
  assert.deepEqual(shapes.get('model.layers.1.mlp.moe_statics.e_score_correction_bias'), [1, 64]);
  assert.deepEqual(shapes.get('model.layers.1.mlp.shared_experts.gate_proj.weight'), [3072, 2560]);
  assert.deepEqual(shapes.get('model.layers.0.mlp.gate_proj.weight'), [12288, 2560]);
});

test('ERNIE 4.5 MoE: the sparse layers from start, end (-1: the last) and interval; either spelling of the expert counts; class defaults', () => {
  const layers = (json: Record<string, unknown>) => parse({ ...ERNIE_45_21B, num_hidden_layers: 6, ...json }).sparseLayers;
  assert.deepEqual(layers({ moe_layer_start_index: 0, moe_layer_end_index: -1, moe_layer_interval: 2 }), [false, true, false, true, false, true]);
  assert.deepEqual(layers({ moe_layer_start_index: 2, moe_layer_end_index: 3, moe_layer_interval: 1 }), [false, false, true, true, false, false]);
  const { moe_num_experts: _e, moe_k: _k, ...plain } = ERNIE_45_21B;
  const aliased = parse({ ...plain, num_experts: 16, num_experts_per_tok: 4 }).moe;
  assert.deepEqual([aliased.numExperts, aliased.numExpertsPerToken], [16, 4]);
  const defaults = parse({ model_type: 'ernie4_5_moe', vocab_size: 64, hidden_size: 32, num_hidden_layers: 3, num_attention_heads: 4 });
  assert.deepEqual([defaults.numKvHeads, defaults.headDim, defaults.ropeTheta, defaults.intermediateSize, defaults.tieWordEmbeddings], [4, 8, 5e5, 12288, true]);
  assert.deepEqual([defaults.moe.numExperts, defaults.moe.numExpertsPerToken, defaults.moe.sharedIntermediateSize], [64, 6, 3072]);
  assert.deepEqual(defaults.sparseLayers, [false, true, true]);
});

test('ERNIE 4.5 MoE refuses, by key, what Keel does not run as transformers does', () => {
  rejects({ ...ERNIE_45_21B, use_bias: true }, 'use_bias', 'lm_head', 'ernie4_5_moe');
  rejects({ ...ERNIE_45_21B, moe_norm_min: 0.5 }, 'moe_norm_min');
  rejects({ ...ERNIE_45_21B, moe_k: 65 }, 'moe_k', '64');
  rejects({ ...ERNIE_45_21B, num_experts: 32 }, 'moe_num_experts', 'num_experts', 'disagree');
  rejects({ ...ERNIE_45_21B, partial_rotary_factor: 0.5 }, 'partial_rotary_factor');
});
