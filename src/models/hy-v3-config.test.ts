import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parameterCount } from '../bench/roofline.ts';
import type { HyV3Config } from './hy-v3.ts';
import { createModel, parseModelArchitecture } from './registry.ts';
import { assertInvalidModel } from '../../test/helpers/invalid-model.ts';

const parse = (json: Record<string, unknown>) => parseModelArchitecture(json, 'test/config.json').config as HyV3Config;

/** HYV3Config's defaults (Hy3-preview's shape) with the keys Keel requires written out. */
const HY3 = { model_type: 'hy_v3', vocab_size: 120832, hidden_size: 4096, num_hidden_layers: 80, num_attention_heads: 64 };

test("Hy3 takes HYV3Config's defaults: GQA 64/8 of 128 with q/k norms, layer 0 dense, then 8 of 192 experts × 2.826 with a shared one", () => {
  const c = parse(HY3);
  assert.deepEqual([c.numKvHeads, c.headDim, c.ropeTheta, c.rmsNormEps, c.maxPositionEmbeddings, c.intermediateSize], [8, 128, 11_158_840, 1e-5, 131072, 13312]);
  assert.deepEqual([c.qkNorm, c.qkNormOver, c.attentionBias, c.outputBias, c.tieWordEmbeddings], [true, 'head', false, false, false]);
  assert.deepEqual(c.sparseLayers.slice(0, 3), [false, true, true]);
  assert.deepEqual([c.numExperts, c.numExpertsPerToken, c.expertIntermediateSize, c.sharedIntermediateSize, c.routedScale], [192, 8, 1536, 1536, 2.826]);
});

test("Hy3 reads transformers' parameter count under the Hub's names: router.gate, expert_bias, shared_mlp", () => {
  const model = createModel(parseModelArchitecture(HY3, 'test/config.json'), 64);
  // HYV3ForCausalLM.from_config(HYV3Config()) on the meta device holds 295,033,528,320 parameters;
  // Keel's list adds the 79 MoE layers' expert_bias buffers (192 each), which the checkpoint stores.
  assert.equal(parameterCount(model), 295_033_528_320 + 79 * 192);
  const shapes = new Map(model.parameters().map((p) => [p.name, p.shape]));
  assert.deepEqual(shapes.get('model.layers.1.mlp.router.gate.weight'), [192, 4096]);
  assert.deepEqual(shapes.get('model.layers.1.mlp.expert_bias'), [192]);
  assert.deepEqual(shapes.get('model.layers.1.mlp.shared_mlp.up_proj.weight'), [1536, 4096]);
  assert.deepEqual(shapes.get('model.layers.0.mlp.up_proj.weight'), [13312, 4096]);
});

test('Hy3 reads mlp_layer_types, num_local_experts, and a shared MLP intermediate_size wide where num_shared_experts is 0 (HYV3MLP falls back to it)', () => {
  const json = { ...HY3, num_hidden_layers: 3, intermediate_size: 64, moe_intermediate_size: 16, num_experts_per_tok: 2 };
  const c = parse({ ...json, mlp_layer_types: ['sparse', 'dense', 'sparse'], num_local_experts: 8, num_shared_experts: 0, attention_bias: true });
  assert.deepEqual([c.sparseLayers, c.numExperts, c.sharedIntermediateSize, c.attentionBias, c.outputBias], [[true, false, true], 8, 64, true, true]);
  assertInvalidModel(() => parse({ ...json, mlp_bias: true }), 'mlp_bias');
  assertInvalidModel(() => parse({ ...json, num_experts: 8, num_local_experts: 4 }), 'num_local_experts');
});
