import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parameterCount } from '../bench/roofline.ts';
import type { Glm4MoeConfig } from './glm4-moe.ts';
import { createModel, mtpLayersOf, parseModelArchitecture } from './registry.ts';
import { assertInvalidModel } from '../../test/helpers/invalid-model.ts';

const parse = (json: Record<string, unknown>) => parseModelArchitecture(json, 'test/config.json').config as Glm4MoeConfig;

/** SolarOpenConfig's defaults (Solar-Open-100B's shape) with the keys Keel requires written out. */
const SOLAR_OPEN = { model_type: 'solar_open', vocab_size: 196608, hidden_size: 4096, num_hidden_layers: 48, num_attention_heads: 64 };

test("Solar Open takes SolarOpenConfig's defaults: GQA 64/8 of 128, the whole head rotating by theta 1e6, 8 of 128 experts in every layer", () => {
  const c = parse(SOLAR_OPEN);
  assert.deepEqual([c.numKvHeads, c.headDim, c.rotaryDim, c.ropeTheta, c.rmsNormEps, c.maxPositionEmbeddings, c.tieWordEmbeddings], [8, 128, 128, 1e6, 1e-5, 131072, false]);
  assert.deepEqual([c.attentionBias, c.outputBias, c.qkNorm, c.numNextnPredictLayers], [false, false, false, 0]);
  assert.deepEqual(c.sparseLayers, new Array(48).fill(true));
  assert.deepEqual(c.moe, {
    numExperts: 128,
    numExpertsPerToken: 8,
    expertIntermediateSize: 1280,
    sharedIntermediateSize: 1280,
    fusedExperts: false,
    routing: { topK: 8, scoring: 'sigmoid', selectionBias: true, groups: null, normalize: true, scale: 1 },
  });
});

test("Solar Open reads transformers' parameter count: no dense layer, the selection bias beside every router", () => {
  const model = createModel(parseModelArchitecture(SOLAR_OPEN, 'test/config.json'), 64);
  // SolarOpenForCausalLM.from_config(SolarOpenConfig()) on the meta device holds 102,651,793,408
  // parameters; Keel's list adds the 48 layers' e_score_correction_bias buffers (128 each), which the checkpoint stores.
  assert.equal(parameterCount(model), 102_651_793_408 + 48 * 128);
  const shapes = new Map(model.parameters().map((p) => [p.name, p.shape]));
  assert.deepEqual(shapes.get('model.layers.0.mlp.gate.e_score_correction_bias'), [128]);
  assert.deepEqual(shapes.get('model.layers.0.self_attn.q_proj.weight'), [8192, 4096]);
  assert.equal(shapes.get('model.layers.0.self_attn.q_norm.weight'), undefined);
});

test("Solar Open reads neither GLM-4.5's dense-layer keys, q/k norms nor MTP layers, and refuses a partial rotary (Llama's attention fails on it)", () => {
  const c = parse({ ...SOLAR_OPEN, first_k_dense_replace: 3, intermediate_size: 1024, use_qk_norm: true, num_nextn_predict_layers: 1, attention_bias: true, rope_parameters: { rope_type: 'default', rope_theta: 5e5, partial_rotary_factor: 1 } });
  assert.deepEqual(c.sparseLayers, new Array(48).fill(true));
  assert.deepEqual([c.qkNorm, c.numNextnPredictLayers, c.attentionBias, c.outputBias, c.rotaryDim, c.ropeTheta], [false, 0, true, false, 128, 5e5]);
  assertInvalidModel(() => parse({ ...SOLAR_OPEN, partial_rotary_factor: 0.5 }), 'partial_rotary_factor');
  assertInvalidModel(() => parse({ ...SOLAR_OPEN, rope_parameters: { rope_type: 'default', partial_rotary_factor: 0.5 } }), 'partial_rotary_factor');
  assertInvalidModel(() => mtpLayersOf(c), 'mtp');
  assertInvalidModel(() => parse({ ...SOLAR_OPEN, num_experts_per_tok: 200 }), 'num_experts_per_tok');
});
