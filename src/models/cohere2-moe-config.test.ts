import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parameterCount } from '../bench/roofline.ts';
import type { CohereConfig } from './cohere.ts';
import { createModel, parseModelArchitecture } from './registry.ts';
import { assertInvalidModel } from '../../test/helpers/invalid-model.ts';

const parse = (json: Record<string, unknown>) => parseModelArchitecture(json, 'test/config.json').config as CohereConfig;

/** Cohere2MoeConfig's defaults with the keys Keel requires written out. */
const COHERE2_MOE = { model_type: 'cohere2_moe', vocab_size: 256000, hidden_size: 8192, num_hidden_layers: 40, num_attention_heads: 64, intermediate_size: 22528 };

test("Cohere 2 MoE takes Cohere2MoeConfig's defaults: every layer 2 of 8 experts by a softmax over the top-2 logits, LayerNorms, Cohere 2's windows", () => {
  const c = parse(COHERE2_MOE);
  assert.deepEqual([c.numKvHeads, c.headDim, c.norm, c.layerNormEps, c.logitScale, c.tieWordEmbeddings], [64, 128, 'layer', 1e-5, 0.0625, true]);
  assert.deepEqual(c.sparseLayers, new Array(40).fill(true));
  assert.deepEqual(c.slidingWindows.slice(0, 4), [4096, 4096, 4096, null]);
  assert.deepEqual(c.ropeLayers.slice(0, 4), [true, true, true, false]);
  assert.deepEqual(c.moe, { numExperts: 8, numExpertsPerToken: 2, expertIntermediateSize: 22528, scoring: 'topk-softmax', normalize: false, sharedIntermediateSize: 0 });
});

test("Cohere 2 MoE reads transformers' parameter count", () => {
  const model = createModel(parseModelArchitecture(COHERE2_MOE, 'test/config.json'), 64);
  // Cohere2MoeForCausalLM.from_config(Cohere2MoeConfig()) on the meta device holds 190,004,928,512 parameters (tied).
  assert.equal(parameterCount(model), 190_004_928_512);
});

test("Cohere 2 MoE's dense prefix: first_k_dense_replace layers with their own width and window pattern, rotating whatever their attention when the pattern is 1", () => {
  const json = { ...COHERE2_MOE, num_hidden_layers: 6, sliding_window: 8, first_k_dense_replace: 2, prefix_dense_intermediate_size: 1024 };
  // Cohere2MoeConfig(num_hidden_layers=6, first_k_dense_replace=2, prefix_dense_sliding_window_pattern=2).layer_types
  const c = parse({ ...json, prefix_dense_sliding_window_pattern: 2 });
  assert.deepEqual(c.slidingWindows, [8, null, 8, 8, 8, null]);
  assert.deepEqual([c.sparseLayers, c.intermediateSize], [[false, false, true, true, true, true], 1024]);
  assert.deepEqual(c.ropeLayers, [true, false, true, true, true, false]);
  // Pattern 1 (the default): the dense layers attend fully and still rotate (Cohere2MoeAttention's force_rope).
  const forced = parse(json);
  assert.deepEqual([forced.slidingWindows.slice(0, 2), forced.ropeLayers.slice(0, 2)], [[null, null], [true, true]]);
});

test('Cohere 2 MoE reads RMSNorms where rms_norm_eps is set, sigmoid routing, and refuses averaging shared experts or another selection', () => {
  const c = parse({ ...COHERE2_MOE, rms_norm_eps: 1e-6, expert_selection_fn: 'sigmoid', norm_topk_prob: false, num_shared_experts: 2, shared_expert_combination_strategy: 'sum' });
  assert.deepEqual([c.norm, c.layerNormEps, c.moe?.scoring, c.moe?.normalize, c.moe?.sharedIntermediateSize], ['rms', 1e-6, 'sigmoid', false, 2 * 22528]);
  const shapes = new Map(createModel(parseModelArchitecture({ ...COHERE2_MOE, num_hidden_layers: 1, rms_norm_eps: 1e-6, num_shared_experts: 1, shared_expert_combination_strategy: 'sum' }, 'test/config.json'), 64).parameters().map((p) => [p.name, p.shape]));
  assert.deepEqual(shapes.get('model.layers.0.mlp.shared_experts.up_proj.weight'), [22528, 8192]);
  assert.deepEqual(shapes.get('model.layers.0.mlp.gate.weight'), [8, 8192]);
  assertInvalidModel(() => parse({ ...COHERE2_MOE, num_shared_experts: 1 }), 'shared_expert_combination_strategy');
  assertInvalidModel(() => parse({ ...COHERE2_MOE, expert_selection_fn: 'relu' }), 'expert_selection_fn');
});

test("Cohere 2 MoE reads its RoPE from rope_parameters; the 4.x rope_scaling, which Cohere2MoeConfig never reads, is refused", () => {
  const linear = parse({ ...COHERE2_MOE, rope_theta: 5e4, rope_scaling: null, rope_parameters: { rope_type: 'linear', factor: 2, rope_theta: 5e4 } });
  assert.deepEqual([linear.rope.ropeTheta, linear.rope.ropeScaling], [5e4, { type: 'linear', factor: 2 }]);
  assertInvalidModel(() => parse({ ...COHERE2_MOE, rope_theta: 5e4, rope_scaling: { rope_type: 'linear', factor: 2 } }), 'rope_scaling');
});
