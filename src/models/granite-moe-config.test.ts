import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parameterCount } from '../bench/roofline.ts';
import type { GraniteMoeConfig } from './granite-moe.ts';
import { createModel, parseModelArchitecture } from './registry.ts';

const parse = (json: Record<string, unknown>) => parseModelArchitecture(json, 'test/config.json').config as GraniteMoeConfig;

/** granite-3.0-1b-a400m's config.json shape. */
const GRANITE_MOE = {
  architectures: ['GraniteMoeForCausalLM'],
  model_type: 'granitemoe',
  hidden_size: 1024,
  intermediate_size: 512,
  num_hidden_layers: 24,
  num_attention_heads: 16,
  num_key_value_heads: 8,
  num_local_experts: 32,
  num_experts_per_tok: 8,
  vocab_size: 49155,
  max_position_embeddings: 4096,
  rope_theta: 10000,
  rms_norm_eps: 1e-6,
  tie_word_embeddings: true,
  attention_bias: false,
  embedding_multiplier: 12.0,
  attention_multiplier: 0.015625,
  residual_multiplier: 0.22,
  logits_scaling: 6.0,
};

test("Granite MoE: Granite's four multipliers, 32 experts 512 wide routed top 8 (renormalized), no shared MLP", () => {
  const c = parse(GRANITE_MOE);
  assert.deepEqual([c.hiddenSize, c.numLayers, c.numHeads, c.numKvHeads, c.headDim, c.vocabSize, c.tieWordEmbeddings], [1024, 24, 16, 8, 64, 49155, true]);
  assert.deepEqual(c.multipliers, { embedding: 12, residual: 0.22, attention: 0.015625, logits: 6 });
  assert.deepEqual([c.intermediateSize, c.numExperts, c.numExpertsPerToken, c.sharedIntermediateSize], [512, 32, 8, 0]);
  assert.deepEqual([c.qkNorm, c.attentionBias, c.outputBias], [false, false, false]);
  // GraniteMoeConfig has no shared MLP: the key is granitemoeshared's alone.
  assert.equal(parse({ ...GRANITE_MOE, shared_intermediate_size: 1024 }).sharedIntermediateSize, 0);
});

test("Granite MoE reads transformers' parameter count and the Hub's fused expert names, output-major", () => {
  const model = createModel(parseModelArchitecture(GRANITE_MOE, 'test/config.json'), 64);
  // GraniteMoeForCausalLM.from_config(this config) on the meta device holds 1,334,628,352 parameters (tied head).
  assert.equal(parameterCount(model), 1_334_628_352);
  const shapes = new Map(model.parameters().map((p) => [p.name, p.shape]));
  assert.deepEqual(shapes.get('model.layers.0.block_sparse_moe.router.layer.weight'), [32, 1024]);
  assert.deepEqual(shapes.get('model.layers.23.block_sparse_moe.input_linear.weight'), [32, 1024, 1024]);
  assert.deepEqual(shapes.get('model.layers.23.block_sparse_moe.output_linear.weight'), [32, 1024, 512]);
});

test("Granite MoE with a shared MLP (granitemoeshared) adds shared_mlp's input_linear / output_linear, and transformers' parameter count", () => {
  const json = { ...GRANITE_MOE, architectures: ['GraniteMoeSharedForCausalLM'], model_type: 'granitemoeshared', shared_intermediate_size: 1024 };
  assert.equal(parse(json).sharedIntermediateSize, 1024);
  const model = createModel(parseModelArchitecture(json, 'test/config.json'), 64);
  // GraniteMoeSharedForCausalLM.from_config(this config) on the meta device holds 1,410,125,824 parameters.
  assert.equal(parameterCount(model), 1_410_125_824);
  const shapes = new Map(model.parameters().map((p) => [p.name, p.shape]));
  assert.deepEqual(shapes.get('model.layers.5.shared_mlp.input_linear.weight'), [2048, 1024]);
  assert.deepEqual(shapes.get('model.layers.5.shared_mlp.output_linear.weight'), [1024, 1024]);
  const { shared_intermediate_size: _, ...withoutShared } = json;
  assert.equal(parse(withoutShared).sharedIntermediateSize, 0);
});

test("Granite MoE takes GraniteMoeConfig's defaults for the keys a config leaves out", () => {
  const c = parse({ model_type: 'granitemoe', vocab_size: 64, hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 4 });
  assert.deepEqual([c.numKvHeads, c.maxPositionEmbeddings, c.rmsNormEps, c.intermediateSize, c.numExperts, c.numExpertsPerToken, c.tieWordEmbeddings], [4, 2048, 1e-6, 11008, 8, 2, false]);
  assert.deepEqual(c.multipliers, { embedding: 1, residual: 1, attention: 1, logits: 1 });
});
