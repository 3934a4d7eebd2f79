import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parameterCount } from '../bench/roofline.ts';
import type { ExaoneMoeConfig } from './exaone-moe.ts';
import { createModel, parseModelArchitecture } from './registry.ts';
import { assertInvalidModel } from '../../test/helpers/invalid-model.ts';

const parse = (json: Record<string, unknown>) => parseModelArchitecture(json, 'test/config.json').config as ExaoneMoeConfig;

/** The keys ExaoneMoeConfig requires nothing of: every other one takes the class default. */
const MINIMAL = { model_type: 'exaone_moe' };

test("EXAONE MoE takes ExaoneMoeConfig's defaults: EXAONE 4's layers over 4, 32 KV heads, layer 0 dense, then 8 of 64 experts × 2.5 with a shared one", () => {
  const c = parse({ ...MINIMAL, vocab_size: 102400, hidden_size: 4096, num_hidden_layers: 32, num_attention_heads: 32 });
  assert.deepEqual([c.numKvHeads, c.headDim, c.rmsNormEps, c.ropeTheta, c.maxPositionEmbeddings, c.intermediateSize, c.tieWordEmbeddings], [32, 128, 1e-5, 1e4, 2048, 16384, false]);
  assert.deepEqual([c.qkNorm, c.qkNormOver, c.attentionBias, c.outputBias], [true, 'head', false, false]);
  assert.deepEqual(c.slidingWindows.slice(0, 4), [4096, 4096, 4096, null]);
  // Only the sliding layers rotate: EXAONE 4's global layers are NoPE.
  assert.deepEqual(c.ropeLayers.slice(0, 4), [true, true, true, false]);
  assert.deepEqual(c.sparseLayers.slice(0, 3), [false, true, true]);
  assert.deepEqual(c.moe, {
    numExperts: 64,
    numExpertsPerToken: 8,
    expertIntermediateSize: 1024,
    sharedIntermediateSize: 1024,
    fusedExperts: false,
    routing: { topK: 8, scoring: 'sigmoid', selectionBias: true, groups: null, normalize: true, scale: 2.5 },
  });
});

test("EXAONE MoE reads transformers' parameter count, the selection bias beside each MoE layer's router", () => {
  const model = createModel(parseModelArchitecture({ ...MINIMAL, vocab_size: 102400, hidden_size: 4096, num_hidden_layers: 32, num_attention_heads: 32 }, 'test/config.json'), 64);
  // ExaoneMoeForCausalLM.from_config(ExaoneMoeConfig()) on the meta device holds 28,550,639,616
  // parameters; Keel's list adds the 31 MoE layers' e_score_correction_bias buffers (64 each), which the checkpoint stores.
  assert.equal(parameterCount(model), 28_550_639_616 + 31 * 64);
  const shapes = new Map(model.parameters().map((p) => [p.name, p.shape]));
  assert.deepEqual(shapes.get('model.layers.1.mlp.e_score_correction_bias'), [64]);
  assert.equal(shapes.get('model.layers.1.mlp.gate.e_score_correction_bias'), undefined);
  assert.deepEqual(shapes.get('model.layers.1.mlp.shared_experts.up_proj.weight'), [1024, 4096]);
  assert.deepEqual(shapes.get('model.layers.0.mlp.up_proj.weight'), [16384, 4096]);
  assert.deepEqual(shapes.get('model.layers.0.self_attn.k_norm.weight'), [128]);
});

test('EXAONE MoE reads its own key names for the expert counts, mlp_layer_types over first_k_dense_replace, and groups', () => {
  const json = { ...MINIMAL, vocab_size: 64, hidden_size: 64, num_hidden_layers: 3, num_attention_heads: 4, num_key_value_heads: 2, num_experts: 8, num_shared_experts: 2, moe_intermediate_size: 16, num_experts_per_tok: 2, n_group: 2, topk_group: 1 };
  const c = parse({ ...json, mlp_layer_types: ['sparse', 'dense', 'sparse'], first_k_dense_replace: 2 });
  assert.deepEqual(c.sparseLayers, [true, false, true]);
  assert.deepEqual([c.moe.numExperts, c.moe.sharedIntermediateSize], [8, 32]);
  assert.deepEqual(c.moe.routing.groups, { numGroups: 2, topkGroups: 1, score: 'top2-sum' });
  assert.deepEqual(parse({ ...json, first_k_dense_replace: 2 }).sparseLayers, [false, false, true]);
  // DeepSeek's spelling is not ExaoneMoeConfig's: n_routed_experts is not read.
  assert.equal(parse({ ...json, n_routed_experts: 4 }).moe.numExperts, 8);
  assertInvalidModel(() => parse({ ...json, mlp_layer_types: ['sparse', 'dense'] }), 'mlp_layer_types');
  assertInvalidModel(() => parse({ ...json, num_experts: 7 }), 'n_group');
});

test("EXAONE MoE's layers: layer_types as EXAONE 4's; a null sliding_window, which ExaoneMoeConfig refuses, is refused", () => {
  const json = { ...MINIMAL, vocab_size: 64, hidden_size: 64, num_hidden_layers: 3, num_attention_heads: 4, num_key_value_heads: 2, sliding_window: 8 };
  const c = parse({ ...json, layer_types: ['full_attention', 'sliding_attention', 'full_attention'] });
  assert.deepEqual([c.slidingWindows, c.ropeLayers], [[null, 8, null], [false, true, false]]);
  assertInvalidModel(() => parse({ ...json, sliding_window: null }), 'sliding_window');
  assertInvalidModel(() => parse({ ...json, sliding_window_pattern: 'LLG' }), 'sliding_window_pattern');
});
