import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parameterCount } from '../bench/roofline.ts';
import type { NanochatConfig } from './nanochat.ts';
import { createModel, parseModelArchitecture } from './registry.ts';
import { assertInvalidModel } from '../../test/helpers/invalid-model.ts';

const parse = (json: Record<string, unknown>) => parseModelArchitecture(json, 'test/config.json').config as NanochatConfig;

/** NanoChatConfig's defaults (nanochat d12's shape) with the keys Keel requires written out. */
const NANOCHAT = { model_type: 'nanochat', vocab_size: 50304, hidden_size: 768, num_hidden_layers: 12, num_attention_heads: 6 };

test("nanochat takes NanoChatConfig's defaults: MHA of 128, an MLP 8192 wide, final logits capped at 15, untied", () => {
  const c = parse(NANOCHAT);
  assert.deepEqual([c.numKvHeads, c.headDim, c.intermediateSize, c.rmsNormEps, c.ropeTheta, c.maxPositionEmbeddings], [6, 128, 8192, 1e-6, 1e4, 2048]);
  assert.deepEqual([c.finalLogitSoftcap, c.attentionBias, c.tieWordEmbeddings, c.activation], [15, false, false, { kind: 'relu' }]);
  assert.equal(parse({ ...NANOCHAT, final_logit_softcapping: null }).finalLogitSoftcap, null);
});

test("nanochat reads transformers' parameter count: no norm has weights, the MLP is fc1 and fc2", () => {
  const model = createModel(parseModelArchitecture(NANOCHAT, 'test/config.json'), 64);
  // NanoChatForCausalLM.from_config(NanoChatConfig()) on the meta device holds 256,573,440 parameters.
  assert.equal(parameterCount(model), 256_573_440);
  const names = model.parameters().map((p) => p.name);
  assert.ok(!names.some((n) => n.includes('norm')), 'no norm weights');
  assert.deepEqual(names.filter((n) => n.startsWith('model.layers.0.mlp.')), ['model.layers.0.mlp.fc1.weight', 'model.layers.0.mlp.fc2.weight']);
});

test("nanochat rotates by YaRN's and LongRoPE's frequencies without their attention factor, which transformers' q/k norms after RoPE norm away but for the epsilon", () => {
  const yarn = parse({ ...NANOCHAT, rope_parameters: { rope_type: 'yarn', rope_theta: 1e4, factor: 4, original_max_position_embeddings: 512 } });
  assert.deepEqual([yarn.ropeScaling.type, 'attentionFactor' in yarn.ropeScaling && yarn.ropeScaling.attentionFactor], ['yarn', 1]);
  // YaRN's attention factor 0.1 · ln 4 + 1 moves into the q/k norms' epsilon.
  assert.ok(Math.abs(yarn.qkNormEps - 1e-6 / (0.1 * Math.log(4) + 1) ** 2) < 1e-18);
  assert.equal(parse(NANOCHAT).qkNormEps, 1e-6);
  assert.equal(yarn.contextLength, 2048);
});

test('nanochat refuses an MLP activation other than relu2 and a partial rotary (its attention rotates whole heads)', () => {
  assertInvalidModel(() => parse({ ...NANOCHAT, hidden_act: 'gelu' }), 'hidden_act');
  assertInvalidModel(() => parse({ ...NANOCHAT, rope_parameters: { rope_type: 'default', rope_theta: 1e4, partial_rotary_factor: 0.5 } }), 'partial_rotary_factor');
});
