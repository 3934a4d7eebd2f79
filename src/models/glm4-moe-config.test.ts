import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { parameterCount } from '../bench/roofline.ts';
import type { Glm4MoeConfig } from './glm4-moe.ts';
import { MtpHead } from './mtp-head.ts';
import { createModel, mtpLayersOf, parseModelArchitecture } from './registry.ts';
import { assertInvalidModel } from '../../test/helpers/invalid-model.ts';

const parse = (json: Record<string, unknown>) => parseModelArchitecture(json, 'test/config.json').config as Glm4MoeConfig;

function rejects(json: Record<string, unknown>, ...fragments: string[]): void {
  assertInvalidModel(() => parseModelArchitecture(json, 'test/config.json'), ...fragments);
}

/** zai-org/GLM-4.5-Air's config.json (transformers 4.x keys), as bench/configs holds it. */
const GLM45_AIR = JSON.parse(readFileSync('bench/configs/glm-4.5-air/config.json', 'utf8')) as Record<string, unknown>;

/** GLM-4.5 (355B-A32B): Air's layout with q/k norms, 160 experts, three dense layers and routed_scaling_factor 2.5. */
const GLM45 = {
  ...GLM45_AIR,
  hidden_size: 5120,
  intermediate_size: 12288,
  moe_intermediate_size: 1536,
  n_routed_experts: 160,
  first_k_dense_replace: 3,
  num_hidden_layers: 92,
  routed_scaling_factor: 2.5,
  use_qk_norm: true,
};

test('GLM-4.5-Air as published: GQA 96/8 of 128 with q/k/v biases, half of each head rotated, V3 routing over 128 experts after one dense layer', () => {
  const c = parse(GLM45_AIR);
  assert.deepEqual([c.hiddenSize, c.numLayers, c.numHeads, c.numKvHeads, c.headDim, c.rotaryDim, c.vocabSize], [4096, 46, 96, 8, 128, 64, 151552]);
  assert.deepEqual([c.attentionBias, c.outputBias, c.qkNorm], [true, false, false]);
  assert.deepEqual([c.ropeTheta, c.ropeScaling, c.rmsNormEps, c.intermediateSize], [1e6, { type: 'default' }, 1e-5, 10944]);
  // The MTP layer after the 46 (num_nextn_predict_layers 1) is a MoE layer too.
  assert.equal(c.numNextnPredictLayers, 1);
  assert.deepEqual(c.sparseLayers, Array.from({ length: 47 }, (_, i) => i >= 1));
  assert.deepEqual(c.moe, {
    numExperts: 128,
    numExpertsPerToken: 8,
    expertIntermediateSize: 1408,
    sharedIntermediateSize: 1408,
    fusedExperts: false,
    routing: { topK: 8, scoring: 'sigmoid', selectionBias: true, groups: null, normalize: true, scale: 1 },
  });
  assert.deepEqual(c.eosTokenIds, [151329, 151336, 151338]);
});

test('GLM-4.5-Air reads transformers\' parameter count, its MTP layer (model.layers.46) left out as transformers leaves it', () => {
  const model = createModel(parseModelArchitecture(GLM45_AIR, 'test/config.json'), 64);
  // Glm4MoeForCausalLM.from_config(this config) on the meta device holds 106,852,245,504 parameters;
  // Keel's list adds the 45 MoE layers' e_score_correction_bias buffers (128 each), which the checkpoint stores.
  assert.equal(parameterCount(model), 106_852_245_504 + 45 * 128);
  assert.ok(!model.parameters().some((p) => p.name.startsWith('model.layers.46.')), 'no tensor of the MTP layer is read');
  assert.deepEqual(model.kvLayers[0], { kind: 'attention', numKvHeads: 8, headDim: 128, slidingWindow: null });
});

test("GLM-4.5-Air's MTP head reads layer 46 as vLLM and SGLang name it: GLM-4.5's own decoder layer with the MoE block, not the layer's copy of the embedding", () => {
  const architecture = parseModelArchitecture(GLM45_AIR, 'test/config.json');
  const model = createModel(architecture, 64);
  const names = new Set(MtpHead.forTarget(architecture.config, mtpLayersOf(architecture.config), model, null, 64).parameters().map((p) => p.name));
  const p = 'model.layers.46';
  const expected = [
    ...['enorm', 'hnorm', 'eh_proj', 'shared_head.norm', 'shared_head.head', 'input_layernorm', 'post_attention_layernorm'].map((n) => `${p}.${n}.weight`),
    ...['q', 'k', 'v'].flatMap((x) => [`${p}.self_attn.${x}_proj.weight`, `${p}.self_attn.${x}_proj.bias`]),
    `${p}.self_attn.o_proj.weight`, `${p}.mlp.gate.weight`, `${p}.mlp.gate.e_score_correction_bias`,
    ...['gate', 'up', 'down'].flatMap((x) => [`${p}.mlp.shared_experts.${x}_proj.weight`, ...Array.from({ length: 128 }, (_, e) => `${p}.mlp.experts.${e}.${x}_proj.weight`)]),
  ];
  assert.deepEqual(names, new Set(expected));
});

test('GLM-4.5 takes q/k norms, three dense layers and its routed scale', () => {
  const c = parse(GLM45);
  assert.equal(c.qkNorm, true);
  assert.deepEqual(c.sparseLayers.slice(0, 4), [false, false, false, true]);
  assert.equal(c.moe.routing.scale, 2.5);
  const names = new Set(createModel(parseModelArchitecture(GLM45, 'test/config.json'), 64).parameters().map((p) => p.name));
  for (const name of ['model.layers.3.self_attn.q_norm.weight', 'model.layers.3.self_attn.q_proj.bias', 'model.layers.3.mlp.gate.e_score_correction_bias']) {
    assert.ok(names.has(name), `reads ${name}`);
  }
  assert.ok(!names.has('model.layers.3.self_attn.o_proj.bias'), 'o_proj has no bias whatever attention_bias says');
});

test('partial_rotary_factor: the rope dict\'s wins over the top-level key, and Glm4MoeConfig\'s default is 0.5', () => {
  const { partial_rotary_factor: _, rope_theta: theta, rope_scaling: __, ...rest } = GLM45_AIR;
  assert.equal(parse(rest).rotaryDim, 64);
  assert.equal(parse({ ...rest, partial_rotary_factor: 0.25 }).rotaryDim, 32);
  const v5 = { ...rest, partial_rotary_factor: 0.75, rope_parameters: { rope_type: 'default', rope_theta: theta, partial_rotary_factor: 1 } };
  assert.equal(parse(v5).rotaryDim, 128);
});

test('Glm4MoeConfig\'s defaults fill the keys a config leaves out', () => {
  const c = parse({ model_type: 'glm4_moe', vocab_size: 64, hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 16, num_experts_per_tok: 2 });
  assert.deepEqual([c.numKvHeads, c.headDim, c.rotaryDim, c.intermediateSize, c.rmsNormEps, c.maxPositionEmbeddings], [8, 4, 2, 10944, 1e-5, 131072]);
  assert.deepEqual([c.attentionBias, c.qkNorm], [false, false]);
  // transformers 5.18 declares one MTP layer by default (num_mtp_layers 1), a MoE layer.
  assert.equal(c.numNextnPredictLayers, 1);
  assert.deepEqual(c.sparseLayers, [false, true, true]);
  assert.deepEqual([c.moe.numExperts, c.moe.expertIntermediateSize, c.moe.sharedIntermediateSize], [128, 1408, 1408]);
  assert.deepEqual(c.moe.routing, { topK: 2, scoring: 'sigmoid', selectionBias: true, groups: null, normalize: true, scale: 1 });
});

test('grouped routing (n_group, topk_group) scores a group by its two best experts', () => {
  const c = parse({ ...GLM45_AIR, n_group: 8, topk_group: 4 });
  assert.deepEqual(c.moe.routing.groups, { numGroups: 8, topkGroups: 4, score: 'top2-sum' });
});

test('GLM-4-MoE configs Keel cannot run are rejected, naming the key', () => {
  rejects({ ...GLM45_AIR, partial_rotary_factor: 0.2 }, 'partial_rotary_factor 0.2', '25 rotary dims');
  rejects({ ...GLM45_AIR, topk_method: 'greedy' }, 'topk_method "greedy"', 'glm4_moe');
  rejects({ ...GLM45_AIR, scoring_func: 'softmax' }, 'scoring_func "softmax"');
  rejects({ ...GLM45_AIR, n_group: 3, topk_group: 1 }, 'n_group 3');
  rejects({ ...GLM45_AIR, num_experts_per_tok: 200 }, 'num_experts_per_tok (200)');
  rejects({ ...GLM45_AIR, num_key_value_heads: 7 }, 'num_key_value_heads (7)');
  rejects({ ...GLM45_AIR, rope_scaling: { type: 'su' } }, 'rope type "su"');
});
