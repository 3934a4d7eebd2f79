import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parameterCount } from '../bench/roofline.ts';
import type { Dots1Config } from './dots1.ts';
import { createModel, parseModelArchitecture } from './registry.ts';
import { assertInvalidModel } from '../../test/helpers/invalid-model.ts';

const parse = (json: Record<string, unknown>) => parseModelArchitecture(json, 'test/config.json').config as Dots1Config;

/** dots.llm1's config.json shape, with n_group / topk_group written null (read as one group). */
const DOTS1 = {
  architectures: ['Dots1ForCausalLM'],
  model_type: 'dots1',
  hidden_size: 4096,
  intermediate_size: 10944,
  moe_intermediate_size: 1408,
  num_hidden_layers: 62,
  num_attention_heads: 32,
  num_key_value_heads: 32,
  n_routed_experts: 128,
  n_shared_experts: 2,
  num_experts_per_tok: 6,
  first_k_dense_replace: 1,
  norm_topk_prob: true,
  routed_scaling_factor: 2.5,
  scoring_func: 'sigmoid',
  n_group: null,
  topk_group: null,
  vocab_size: 152064,
  max_position_embeddings: 32768,
  rope_theta: 10000000,
  rms_norm_eps: 1e-5,
  sliding_window: null,
  max_window_layers: 62,
  tie_word_embeddings: false,
  attention_bias: false,
};

test('dots.llm1: per-head q/k norms, layer 0 dense, then sigmoid + bias routing of 6 of 128 experts, renormalized, × 2.5, 2 shared experts', () => {
  const c = parse(DOTS1);
  assert.deepEqual([c.hiddenSize, c.numLayers, c.numHeads, c.numKvHeads, c.headDim, c.vocabSize], [4096, 62, 32, 32, 128, 152064]);
  assert.deepEqual([c.qkNorm, c.qkNormOver, c.attentionBias, c.outputBias, c.ropeTheta, c.rmsNormEps], [true, 'head', false, false, 1e7, 1e-5]);
  assert.deepEqual(c.sparseLayers.slice(0, 3), [false, true, true]);
  assert.deepEqual(c.moe, {
    numExperts: 128,
    numExpertsPerToken: 6,
    expertIntermediateSize: 1408,
    sharedIntermediateSize: 2 * 1408,
    fusedExperts: false,
    // n_group and topk_group null: one group (transformers' router cannot run them null; Dots1Config's default is 1).
    routing: { topK: 6, scoring: 'sigmoid', selectionBias: true, groups: null, normalize: true, scale: 2.5 },
  });
  assert.deepEqual(c.slidingWindows, new Array(62).fill(null));
});

test("dots.llm1 reads transformers' parameter count, the bias beside each MoE layer's router", () => {
  const model = createModel(parseModelArchitecture(DOTS1, 'test/config.json'), 64);
  // Dots1ForCausalLM.from_config(this config) on the meta device holds 142,774,373,888 parameters;
  // Keel's list adds the 61 MoE layers' e_score_correction_bias buffers (128 each), which the checkpoint stores.
  assert.equal(parameterCount(model), 142_774_373_888 + 61 * 128);
  const shapes = new Map(model.parameters().map((p) => [p.name, p.shape]));
  assert.deepEqual(shapes.get('model.layers.0.mlp.gate_proj.weight'), [10944, 4096]);
  assert.deepEqual(shapes.get('model.layers.1.mlp.gate.e_score_correction_bias'), [128]);
  assert.deepEqual(shapes.get('model.layers.1.mlp.shared_experts.up_proj.weight'), [2816, 4096]);
  assert.deepEqual(shapes.get('model.layers.0.self_attn.q_norm.weight'), [128]);
});

test("dots.llm1's windows: layer_types, else the layers from max_window_layers on while sliding_window is set (Dots1Config's 4096 by default)", () => {
  assert.deepEqual(parse({ ...DOTS1, num_hidden_layers: 4, sliding_window: 16, max_window_layers: 2 }).slidingWindows, [null, null, 16, 16]);
  const { sliding_window: _, ...defaultWindow } = DOTS1;
  assert.deepEqual(parse({ ...defaultWindow, num_hidden_layers: 3, max_window_layers: 1 }).slidingWindows, [null, 4096, 4096]);
  const layerTypes = ['sliding_attention', 'full_attention', 'sliding_attention'];
  assert.deepEqual(parse({ ...DOTS1, num_hidden_layers: 3, sliding_window: 8, layer_types: layerTypes }).slidingWindows, [8, null, 8]);
});

test("dots.llm1 takes Dots1Config's defaults (norm_topk_prob false, one group, scale 1) and requires the expert counts it has none for", () => {
  const minimal = { model_type: 'dots1', vocab_size: 64, hidden_size: 128, num_hidden_layers: 2, num_attention_heads: 64, n_routed_experts: 4, n_shared_experts: 1, num_experts_per_tok: 2 };
  const c = parse(minimal);
  // num_key_value_heads defaults to 32 (not to num_attention_heads) in Dots1Config.
  assert.deepEqual([c.numKvHeads, c.headDim, c.maxPositionEmbeddings, c.intermediateSize, c.moe.expertIntermediateSize], [32, 2, 2048, 10944, 1408]);
  assert.deepEqual(c.moe.routing, { topK: 2, scoring: 'sigmoid', selectionBias: true, groups: null, normalize: false, scale: 1 });
  assert.deepEqual(c.sparseLayers, [true, true]);
  assert.deepEqual(parse({ ...minimal, n_group: 2, topk_group: 1 }).moe.routing.groups, { numGroups: 2, topkGroups: 1, score: 'top2-sum' });
  for (const key of ['n_routed_experts', 'n_shared_experts', 'num_experts_per_tok']) {
    assertInvalidModel(() => parse({ ...minimal, [key]: undefined }), key);
  }
});
