import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parameterCount } from '../bench/roofline.ts';
import type { LagunaConfig } from './laguna.ts';
import { createModel, parseModelArchitecture } from './registry.ts';
import { assertInvalidModel } from '../../test/helpers/invalid-model.ts';

const parse = (json: Record<string, unknown>) => parseModelArchitecture(json, 'test/config.json').config as LagunaConfig;

/** Laguna as LagunaConfig's defaults: the shape keys a config.json writes, nothing else. */
const LAGUNA = {
  architectures: ['LagunaForCausalLM'],
  model_type: 'laguna',
  vocab_size: 100352,
  hidden_size: 2048,
  num_hidden_layers: 40,
  num_attention_heads: 48,
};

test('Laguna reads LagunaConfig\'s defaults: full attention everywhere, per-head softplus gates, half the head rotated, sigmoid routing', () => {
  const c = parse(LAGUNA);
  assert.deepEqual(
    { kvHeads: c.numKvHeads, headDim: c.headDim, eps: c.rmsNormEps, bias: c.attentionBias, perHead: c.gatePerHead, window: c.slidingWindow },
    { kvHeads: 8, headDim: 128, eps: 1e-6, bias: false, perHead: true, window: 512 },
  );
  assert.deepEqual(c.numHeadsPerLayer, new Array<number>(40).fill(48));
  assert.ok(c.slidingLayers.every((s) => !s));
  assert.deepEqual(c.fullRope, { ropeTheta: 500_000, ropeScaling: { type: 'default' }, rotaryDim: 64 });
  assert.deepEqual(c.sparseLayers, [false, ...new Array<boolean>(39).fill(true)]);
  assert.deepEqual(
    { experts: c.numExperts, topK: c.numExpertsPerToken, width: c.expertIntermediateSize, shared: c.sharedIntermediateSize, scale: c.routedScale, cap: c.routerLogitSoftcap },
    { experts: 256, topK: 8, width: 512, shared: 512, scale: 1, cap: null },
  );
});

test('Laguna holds transformers\' parameter count: g_proj per head, the selection bias beside the experts, an ungated shared expert', () => {
  // LagunaForCausalLM(LagunaConfig()) on the meta device: 33,189,975,808 parameters (its selection biases among them).
  const model = createModel(parseModelArchitecture(LAGUNA, 'test/config.json'), 64);
  assert.equal(parameterCount(model), 33_189_975_808);
  const shapes = new Map(model.parameters().map((p) => [p.name, p.shape]));
  assert.deepEqual(shapes.get('model.layers.1.self_attn.g_proj.weight'), [48, 2048]);
  assert.deepEqual(shapes.get('model.layers.1.mlp.experts.e_score_correction_bias'), [256]);
  assert.deepEqual(shapes.get('model.layers.1.mlp.shared_expert.gate_proj.weight'), [512, 2048]);
  assert.ok(!shapes.has('model.layers.1.mlp.shared_expert_gate.weight'), 'the shared expert is not gated');
});

test('query heads per layer, per-element gates, biases on q/k/v/o and layer types count as transformers builds them', () => {
  const json = {
    ...LAGUNA,
    num_hidden_layers: 3,
    num_attention_heads_per_layer: [48, 64, 32],
    gating: 'per-element',
    attention_bias: true,
    layer_types: ['full_attention', 'sliding_attention', 'full_attention'],
    mlp_layer_types: ['sparse', 'dense', 'sparse'],
    moe_router_logit_softcapping: 30,
  };
  const c = parse(json);
  assert.equal(c.gatePerHead, false);
  assert.deepEqual(c.slidingLayers, [false, true, false]);
  assert.deepEqual(c.slidingRope, { ropeTheta: 10_000, ropeScaling: { type: 'default' }, rotaryDim: 128 });
  assert.equal(c.routerLogitSoftcap, 30);
  // LagunaForCausalLM(LagunaConfig(those keys)): 2,205,201,664 parameters.
  const model = createModel(parseModelArchitecture(json, 'test/config.json'), 64);
  assert.equal(parameterCount(model), 2_205_201_664);
  assert.deepEqual(new Map(model.parameters().map((p) => [p.name, p.shape])).get('model.layers.1.self_attn.g_proj.weight'), [64 * 128, 2048]);
});

test('configs transformers refuses, or whose heads do not split over the KV heads, are refused by name', () => {
  assertInvalidModel(() => parse({ ...LAGUNA, moe_apply_router_weight_on_input: true }), 'moe_apply_router_weight_on_input');
  assertInvalidModel(() => parse({ ...LAGUNA, num_hidden_layers: 2, num_attention_heads_per_layer: [48, 12] }), 'num_attention_heads_per_layer', 'num_key_value_heads (8)');
  assertInvalidModel(() => parse({ ...LAGUNA, gating: 'per-token' }), 'gating "per-token"');
  assertInvalidModel(() => parse({ ...LAGUNA, rope_parameters: { rope_type: 'default', rope_theta: 1e4 } }), 'laguna reads rope_parameters per layer type');
});
