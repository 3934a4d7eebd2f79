import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parameterCount } from '../bench/roofline.ts';
import type { LlamaConfig } from './llama.ts';
import { createModel, parseModelArchitecture } from './registry.ts';
import { assertInvalidModel } from '../../test/helpers/invalid-model.ts';

const parse = (json: Record<string, unknown>) => parseModelArchitecture(json, 'test/config.json').config as LlamaConfig;

/** Jais2Config's defaults (Jais-2-8B's shape) with the keys Keel requires written out. */
const JAIS2 = { model_type: 'jais2', vocab_size: 150272, hidden_size: 3328, num_hidden_layers: 32, num_attention_heads: 26, intermediate_size: 26624 };

test("Jais 2 takes Jais2Config's defaults: biases on attention and the MLP, relu² without a gate, LayerNorms of epsilon 1e-5", () => {
  const c = parse(JAIS2);
  assert.deepEqual([c.numKvHeads, c.headDim, c.maxPositionEmbeddings, c.ropeTheta, c.tieWordEmbeddings], [26, 128, 8192, 1e4, false]);
  assert.deepEqual([c.attentionBias, c.outputBias, c.mlpBias, c.mlp, c.activation], [true, true, true, 'relu2', { kind: 'relu' }]);
  assert.deepEqual([c.norm, c.rmsNormEps, c.slidingWindows.every((w) => w === null)], ['layer', 1e-5, true]);
});

test("Jais 2 reads transformers' parameter count: each norm a weight and a bias", () => {
  const model = createModel(parseModelArchitecture(JAIS2, 'test/config.json'), 64);
  // Jais2ForCausalLM.from_config(Jais2Config()) on the meta device holds 8,090,401,280 parameters.
  assert.equal(parameterCount(model), 8_090_401_280);
  const shapes = new Map(model.parameters().map((p) => [p.name, p.shape]));
  for (const name of ['model.layers.0.input_layernorm.bias', 'model.layers.0.post_attention_layernorm.bias', 'model.norm.bias', 'model.norm.weight']) assert.deepEqual(shapes.get(name), [3328], name);
  assert.equal(shapes.get('model.layers.0.mlp.gate_proj.weight'), undefined);
});

test('Jais 2 reads layer_norm_eps (not rms_norm_eps), the biases off where the config turns them off, and no activation but relu2', () => {
  const c = parse({ ...JAIS2, layer_norm_eps: 1e-6, rms_norm_eps: 0.5, attention_bias: false, mlp_bias: false });
  assert.deepEqual([c.rmsNormEps, c.attentionBias, c.outputBias, c.mlpBias], [1e-6, false, false, false]);
  assertInvalidModel(() => parse({ ...JAIS2, hidden_act: 'silu' }), 'hidden_act');
});
