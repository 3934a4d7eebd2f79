import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parameterCount } from '../bench/roofline.ts';
import type { DeepseekConfig } from './deepseek.ts';
import { createModel, parseModelArchitecture } from './registry.ts';
import { assertInvalidModel } from '../../test/helpers/invalid-model.ts';

const parse = (json: Record<string, unknown>) => parseModelArchitecture(json, 'test/config.json').config as DeepseekConfig;

/**
 * Mistral Small 4 (119B) as Mistral4Config's defaults: the shape keys a config.json writes, and no
 * rope_parameters (the class's YaRN dict then applies).
 */
const MISTRAL_SMALL_4 = {
  architectures: ['Mistral4ForCausalLM'],
  model_type: 'mistral4',
  vocab_size: 131072,
  hidden_size: 4096,
  intermediate_size: 12288,
  num_hidden_layers: 36,
  num_attention_heads: 32,
};

test('Mistral Small 4 reads Mistral4Config\'s defaults: V3\'s MLA shapes, YaRN with Llama 4\'s query temperature, a softmax router and fused experts', () => {
  const c = parse(MISTRAL_SMALL_4);
  assert.deepEqual(
    { queryRank: c.queryRank, latent: c.latentDim, nope: c.nopeDim, rope: c.ropeDim, value: c.valueDim, eps: c.rmsNormEps, tied: c.tieWordEmbeddings, interleaved: c.interleavedRope },
    { queryRank: 1024, latent: 256, nope: 64, rope: 64, value: 128, eps: 1e-6, tied: false, interleaved: true },
  );
  assert.equal(c.ropeTheta, 10000);
  assert.deepEqual(c.ropeScaling, { type: 'yarn', factor: 128, originalMaxPositionEmbeddings: 8192, betaFast: 32, betaSlow: 1, attentionFactor: 1, truncate: true });
  assert.deepEqual(c.queryTemperature, { floorScale: 8192, attnScale: 0.1, positionOffset: 0 });
  // yarn_apply_mscale: qk_head_dim^-0.5 times mscale(128, mscale_all_dim 1)².
  assert.ok(Math.abs(c.attentionScale - 128 ** -0.5 * (0.1 * Math.log(128) + 1) ** 2) < 1e-12);
  assert.equal(c.numNextnPredictLayers, 0);
  assert.ok(c.sparseLayers.every((sparse) => sparse), 'first_k_dense_replace 0: every layer has experts');
  assert.deepEqual(c.moe, {
    numExperts: 128,
    numExpertsPerToken: 4,
    expertIntermediateSize: 2048,
    sharedIntermediateSize: 2048,
    fusedExperts: true,
    routing: { topK: 4, scoring: 'softmax', selectionBias: false, groups: null, normalize: true, scale: 1 },
  });
});

test('Mistral Small 4 holds transformers\' parameter count, its experts read from the fused gate_up_proj and down_proj', () => {
  // Mistral4ForCausalLM(Mistral4Config(intermediate_size=12288)) on the meta device holds 118,972,826,624 parameters.
  const model = createModel(parseModelArchitecture(MISTRAL_SMALL_4, 'test/config.json'), 64);
  assert.equal(parameterCount(model), 118_972_826_624);
  const names = new Set(model.parameters().map((p) => p.name));
  for (const name of ['model.layers.0.mlp.experts.gate_up_proj', 'model.layers.0.mlp.experts.down_proj', 'model.layers.0.mlp.shared_experts.gate_proj.weight', 'model.layers.35.self_attn.kv_b_proj.weight']) {
    assert.ok(names.has(name), name);
  }
  assert.ok(![...names].some((name) => /experts\.\d+\./.test(name)), 'no per-expert tensor');
  assert.ok(![...names].some((name) => name.includes('e_score_correction_bias')), 'no selection bias');
});

test('dense first layers, one q_proj and biases count as transformers builds them', () => {
  // Mistral4ForCausalLM(Mistral4Config(first_k_dense_replace=2, q_lora_rank=None, num_hidden_layers=4, attention_bias=True)): 8,015,370,496.
  const json = { ...MISTRAL_SMALL_4, num_hidden_layers: 4, first_k_dense_replace: 2, q_lora_rank: null, attention_bias: true };
  assert.deepEqual(parse(json).sparseLayers, [false, false, true, true]);
  assert.equal(parameterCount(createModel(parseModelArchitecture(json, 'test/config.json'), 64)), 8_015_370_496);
});

test('groups, scaling and the temperature come from the config as Mistral4TopkRouter and get_llama_4_attn_scale read them', () => {
  const c = parse({
    ...MISTRAL_SMALL_4,
    n_group: 8, topk_group: 2, norm_topk_prob: false, routed_scaling_factor: 2,
    // transformers reads neither: Mistral 4 always routes by softmax over groups.
    topk_method: 'noaux_tc', scoring_func: 'sigmoid',
    rope_parameters: { rope_type: 'yarn', rope_theta: 1e6, factor: 16, original_max_position_embeddings: 4096, llama_4_scaling_beta: 0.5 },
  });
  assert.deepEqual(c.moe?.routing, { topK: 4, scoring: 'softmax', selectionBias: false, groups: { numGroups: 8, topkGroups: 2, score: 'top2-sum' }, normalize: false, scale: 2 });
  assert.deepEqual(c.queryTemperature, { floorScale: 4096, attnScale: 0.5, positionOffset: 0 });
  assert.equal(c.ropeTheta, 1e6);
});

test('RoPE that transformers cannot fit to the rope part, or without the temperature\'s keys, is refused by name', () => {
  const rope = (params: Record<string, unknown>) => ({ ...MISTRAL_SMALL_4, rope_parameters: { rope_theta: 1e4, original_max_position_embeddings: 4096, llama_4_scaling_beta: 0.1, ...params } });
  assertInvalidModel(() => parse(rope({ rope_type: 'default' })), 'mistral4', 'covers 128 dims', 'qk_rope_head_dim 64');
  assertInvalidModel(() => parse(rope({ rope_type: 'linear', factor: 2, partial_rotary_factor: 1 })), 'covers 128 dims', 'partial_rotary_factor 1');
  // A 4.x rope_scaling leaves partial_rotary_factor out, so transformers rotates whole heads.
  assertInvalidModel(() => parse({ ...MISTRAL_SMALL_4, rope_scaling: { rope_type: 'linear', factor: 2 } }), 'covers 128 dims');
  assertInvalidModel(() => parse(rope({ rope_type: 'yarn', factor: 4, llama_4_scaling_beta: undefined })), 'llama_4_scaling_beta');
  // A rope_scaling dict that names the rope part is read.
  const scaling = parse({ ...MISTRAL_SMALL_4, rope_scaling: { rope_type: 'linear', factor: 2, partial_rotary_factor: 0.5, original_max_position_embeddings: 64, llama_4_scaling_beta: 0.2 } });
  assert.deepEqual(scaling.queryTemperature, { floorScale: 64, attnScale: 0.2, positionOffset: 0 });
});

test('a Mistral 3 vision-language wrapper over mistral4 text is served as its language model', () => {
  const architecture = parseModelArchitecture({
    architectures: ['Mistral3ForConditionalGeneration'],
    model_type: 'mistral3',
    text_config: MISTRAL_SMALL_4,
    vision_config: { head_dim: 64, hidden_size: 1024, image_size: 1540, intermediate_size: 4096, model_type: 'pixtral', num_attention_heads: 16, num_hidden_layers: 24, patch_size: 14 },
  }, 'test/config.json');
  assert.equal(architecture.family.name, 'DeepSeek');
  assert.ok(architecture.languageModelOnly);
  const c = architecture.config as DeepseekConfig;
  assert.equal(c.modelType, 'mistral4');
  assert.equal(c.moe?.fusedExperts, true);
  assert.deepEqual(c.queryTemperature, { floorScale: 8192, attnScale: 0.1, positionOffset: 0 });
});
