import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parameterCount } from '../bench/roofline.ts';
import { assertInvalidModel } from '../../test/helpers/invalid-model.ts';
import type { GraniteHybridConfig } from './granite-hybrid.ts';
import { createModel, parseModelArchitecture } from './registry.ts';

const parse = (json: Record<string, unknown>) => parseModelArchitecture(json, 'test/config.json').config as GraniteHybridConfig;

/** granite-4.0-h-tiny's config.json shape, cut to 8 layers (one of them attention). */
const GRANITE_4_H = {
  architectures: ['GraniteMoeHybridForCausalLM'],
  model_type: 'granitemoehybrid',
  hidden_size: 1536,
  intermediate_size: 512,
  shared_intermediate_size: 1024,
  num_hidden_layers: 8,
  num_attention_heads: 12,
  num_key_value_heads: 4,
  num_local_experts: 64,
  num_experts_per_tok: 6,
  vocab_size: 100352,
  max_position_embeddings: 131072,
  rms_norm_eps: 1e-5,
  tie_word_embeddings: true,
  attention_bias: false,
  embedding_multiplier: 12.0,
  attention_multiplier: 0.0078125,
  residual_multiplier: 0.22,
  logits_scaling: 6.0,
  layer_types: ['mamba', 'mamba', 'mamba', 'mamba', 'mamba', 'attention', 'mamba', 'mamba'],
  position_embedding_type: 'nope',
  mamba_n_heads: 48,
  mamba_d_head: 64,
  mamba_d_state: 128,
  mamba_n_groups: 1,
  mamba_expand: 2,
  mamba_d_conv: 4,
  mamba_chunk_size: 256,
  mamba_conv_bias: true,
  mamba_proj_bias: false,
  rope_theta: 10000,
};

test("Granite 4.0-H: Mamba layers by layer_types, no RoPE, Granite's multipliers, 64 experts top 6 beside a shared MLP", () => {
  const c = parse(GRANITE_4_H);
  assert.deepEqual(c.mambaLayers, [true, true, true, true, true, false, true, true]);
  assert.ok(c.ropeLayers.every((r) => !r));
  assert.deepEqual(c.multipliers, { embedding: 12, residual: 0.22, attention: 0.0078125, logits: 6 });
  assert.deepEqual(c.mamba, { numHeads: 48, headDim: 64, numGroups: 1, stateSize: 128, convKernel: 4, convBias: true, projectionBias: false, dtMin: 0, dtMax: Infinity });
  assert.deepEqual([c.intermediateSize, c.numExperts, c.numExpertsPerToken, c.sharedIntermediateSize], [512, 64, 6, 1024]);
  // transformers 5's names for the layer types, and their alias key, read the same.
  const renamed = parse({ ...GRANITE_4_H, layer_types: undefined, layers_block_type: GRANITE_4_H.layer_types.map((t) => (t === 'mamba' ? 'linear_attention' : 'full_attention')) });
  assert.deepEqual(renamed.mambaLayers, c.mambaLayers);
  assert.ok(parse({ ...GRANITE_4_H, position_embedding_type: 'rope' }).ropeLayers.every((r) => r));
});

test("Granite 4.0-H reads transformers' parameter count and tensor names, dense (no experts) too", () => {
  const model = createModel(parseModelArchitecture(GRANITE_4_H, 'test/config.json'), 64);
  // GraniteMoeHybridForCausalLM.from_config(this config) on the meta device holds 1,509,450,992 parameters (tied head).
  assert.equal(parameterCount(model), 1_509_450_992);
  const shapes = new Map(model.parameters().map((p) => [p.name, p.shape]));
  assert.deepEqual(shapes.get('model.layers.0.mamba.in_proj.weight'), [6448, 1536]);
  assert.deepEqual(shapes.get('model.layers.0.mamba.conv1d.weight'), [3328, 1, 4]);
  assert.deepEqual(shapes.get('model.layers.0.mamba.norm.weight'), [3072]);
  assert.deepEqual(shapes.get('model.layers.7.block_sparse_moe.input_linear.weight'), [64, 1024, 1536]);
  assert.deepEqual(shapes.get('model.layers.5.self_attn.k_proj.weight'), [512, 1536]);
  assert.equal(shapes.get('model.layers.5.mamba.in_proj.weight'), undefined);
  assert.deepEqual(model.kvLayers[0], { kind: 'state', convElements: 3 * 3328, recurrentElements: 48 * 64 * 128 });
  assert.equal(model.kvLayers[5].kind, 'attention');
  const dense = createModel(parseModelArchitecture({ ...GRANITE_4_H, num_local_experts: 0, tie_word_embeddings: false }, 'test/config.json'), 64);
  // ... and 454,845,680 without experts, untied.
  assert.equal(parameterCount(dense), 454_845_680);
});

test("Granite 4.0-H takes GraniteMoeHybridConfig's defaults, and transformers' tagged infinity in time_step_limit", () => {
  const c = parse({ model_type: 'granitemoehybrid', vocab_size: 64, hidden_size: 256, num_hidden_layers: 2, num_attention_heads: 4 });
  assert.deepEqual(c.mambaLayers, [true, true]);
  assert.deepEqual(c.mamba, { numHeads: 128, headDim: 4, numGroups: 1, stateSize: 256, convKernel: 4, convBias: true, projectionBias: false, dtMin: 0, dtMax: Infinity });
  assert.deepEqual([c.numExperts, c.numExpertsPerToken, c.sharedIntermediateSize, c.tieWordEmbeddings], [8, 2, 1024, false]);
  assert.ok(c.ropeLayers.every((r) => !r), 'position_embedding_type defaults to None: no RoPE');
  const limited = parse({ ...GRANITE_4_H, time_step_limit: [0.001, { __float__: 'Infinity' }] }).mamba;
  assert.deepEqual([limited.dtMin, limited.dtMax], [0.001, Infinity]);
  assert.deepEqual([parse({ ...GRANITE_4_H, time_step_limit: [0.01, 0.5] }).mamba.dtMax, parse({ ...GRANITE_4_H, time_step_limit: null }).mamba.dtMax], [0.5, Infinity]);
});

test('Granite 4.0-H refuses layer types, Mamba shapes and activations it cannot run, naming the key', () => {
  assertInvalidModel(() => parse({ ...GRANITE_4_H, layer_types: ['mamba', 'sliding_attention', 'mamba', 'mamba', 'mamba', 'attention', 'mamba', 'mamba'] }), 'layer_types', 'sliding_attention');
  assertInvalidModel(() => parse({ ...GRANITE_4_H, layer_types: ['mamba'] }), 'layer_types', '8 layers');
  assertInvalidModel(() => parse({ ...GRANITE_4_H, mamba_n_heads: 45 }), 'mamba_n_heads (45)');
  assertInvalidModel(() => parse({ ...GRANITE_4_H, mamba_d_head: 32 }), 'mamba_d_head (32)');
  assertInvalidModel(() => parse({ ...GRANITE_4_H, mamba_n_groups: 5 }), 'mamba_n_groups (5)');
  assertInvalidModel(() => parse({ ...GRANITE_4_H, time_step_limit: [1, 0] }), 'time_step_limit');
  assertInvalidModel(() => parse({ ...GRANITE_4_H, hidden_act: 'gelu' }), 'hidden_act', 'granitemoehybrid');
});
