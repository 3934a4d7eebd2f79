import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parameterCount } from '../bench/roofline.ts';
import type { AfmoeConfig } from './afmoe.ts';
import { createModel, parseModelArchitecture } from './registry.ts';
import { assertInvalidModel } from '../../test/helpers/invalid-model.ts';

const parse = (json: Record<string, unknown>) => parseModelArchitecture(json, 'test/config.json').config as AfmoeConfig;

/** AfmoeConfig's defaults with the keys Keel requires written out. */
const AFMOE = { model_type: 'afmoe', vocab_size: 200192, hidden_size: 2048, num_hidden_layers: 32, num_attention_heads: 16 };

test("AFMoE takes AfmoeConfig's defaults: 3 sliding layers of 1024 (RoPE) to 1 full (NoPE), gated attention, 6 of 64 experts after 1 dense layer, 2 shared", () => {
  const c = parse(AFMOE);
  assert.deepEqual([c.numKvHeads, c.headDim, c.maxPositionEmbeddings, c.intermediateSize, c.rmsNormEps, c.tieWordEmbeddings], [16, 128, 16384, 6144, 1e-5, false]);
  assert.deepEqual([c.slidingWindows.slice(0, 4), c.ropeLayers.slice(0, 4)], [[1024, 1024, 1024, null], [true, true, true, false]]);
  assert.deepEqual([c.qkNorm, c.outputGate, c.attentionBias, c.multipliers], [true, true, false, null]);
  assert.deepEqual([c.normNames.attentionOutput, c.normNames.postAttention, c.normNames.mlpOutput], ['post_attention_layernorm', 'pre_mlp_layernorm', 'post_mlp_layernorm']);
  assert.deepEqual([c.sparseLayers.slice(0, 2), c.numExperts, c.numExpertsPerToken, c.expertIntermediateSize, c.sharedIntermediateSize, c.routedScale], [[false, true], 64, 6, 1408, 2816, 1]);
});

test("AFMoE reads transformers' parameter count (its expert_bias a parameter there too)", () => {
  const model = createModel(parseModelArchitecture(AFMOE, 'test/config.json'), 64);
  // AfmoeForCausalLM.from_config(AfmoeConfig()) on the meta device holds 19,232,600,000 parameters.
  assert.equal(parameterCount(model), 19_232_600_000);
  const shapes = new Map(model.parameters().map((p) => [p.name, p.shape]));
  assert.deepEqual(shapes.get('model.layers.0.self_attn.gate_proj.weight'), [2048, 2048]);
  assert.deepEqual(shapes.get('model.layers.1.mlp.router.gate.weight'), [64, 2048]);
  assert.deepEqual(shapes.get('model.layers.1.mlp.expert_bias'), [64]);
  assert.deepEqual(shapes.get('model.layers.1.mlp.shared_experts.down_proj.weight'), [2048, 2816]);
  assert.deepEqual(shapes.get('model.layers.0.pre_mlp_layernorm.weight'), [2048]);
});

test("AFMoE reads mup_enabled as an embedding scale of √hidden, layer_types, num_dense_layers, and refuses a null sliding_window", () => {
  const c = parse({ ...AFMOE, num_hidden_layers: 3, mup_enabled: true, num_dense_layers: 0, num_shared_experts: 0, layer_types: ['full_attention', 'sliding_attention', 'full_attention'] });
  assert.deepEqual([c.multipliers?.embedding, c.multipliers?.attention, c.multipliers?.residual, c.multipliers?.logits], [Math.sqrt(2048), 128 ** -0.5, 1, 1]);
  assert.deepEqual([c.slidingWindows, c.ropeLayers, c.sparseLayers, c.sharedIntermediateSize], [[null, 1024, null], [false, true, false], [true, true, true], 0]);
  assertInvalidModel(() => parse({ ...AFMOE, sliding_window: null }), 'sliding_window');
});
