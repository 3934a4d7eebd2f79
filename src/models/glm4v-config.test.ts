import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parameterCount } from '../bench/roofline.ts';
import { assertInvalidModel } from '../../test/helpers/invalid-model.ts';
import type { Glm4MoeConfig } from './glm4-moe.ts';
import type { LlamaConfig } from './llama.ts';
import { createModel, parseModelArchitecture } from './registry.ts';

const parse = (json: Record<string, unknown>, tensorNames: string[] | null = null) => parseModelArchitecture(json, 'test/config.json', tensorNames);
const llama = (json: Record<string, unknown>) => parse(json).config as LlamaConfig;
const glm4Moe = (json: Record<string, unknown>) => parse(json).config as Glm4MoeConfig;
const withText = (json: { text_config: Record<string, unknown> }, text: Record<string, unknown>) => ({ ...json, text_config: { ...json.text_config, ...text } });

/** zai-org/GLM-4.1V-9B-Thinking's config.json shape (transformers 4.53): text_config nested, M-RoPE in rope_scaling. */
const GLM41V_9B = {
  architectures: ['Glm4vForConditionalGeneration'],
  model_type: 'glm4v',
  text_config: {
    model_type: 'glm4v_text',
    pad_token_id: 151329,
    vocab_size: 151552,
    eos_token_id: [151329, 151336, 151338],
    attention_bias: true,
    attention_dropout: 0.0,
    hidden_act: 'silu',
    hidden_size: 4096,
    initializer_range: 0.02,
    intermediate_size: 13696,
    max_position_embeddings: 65536,
    num_attention_heads: 32,
    num_hidden_layers: 40,
    num_key_value_heads: 2,
    partial_rotary_factor: 0.5,
    rms_norm_eps: 1e-5,
    rope_scaling: { rope_type: 'default', mrope_section: [8, 12, 12] },
    rope_theta: 10000.0,
    tie_word_embeddings: false,
    torch_dtype: 'bfloat16',
    use_cache: true,
  },
  vision_config: { depth: 24, hidden_size: 1536, intermediate_size: 13696, num_heads: 12, out_hidden_size: 4096, patch_size: 14, spatial_merge_size: 2 },
  image_start_token_id: 151339,
  image_end_token_id: 151340,
  image_token_id: 151343,
  video_token_id: 151344,
  torch_dtype: 'bfloat16',
  transformers_version: '4.53.0',
};

/** zai-org/GLM-4.5V's config.json shape: GLM-4.5-Air's language model (glm4v_moe_text) under text_config. */
const GLM45V = {
  architectures: ['Glm4vMoeForConditionalGeneration'],
  model_type: 'glm4v_moe',
  text_config: {
    model_type: 'glm4v_moe_text',
    pad_token_id: 151329,
    vocab_size: 151552,
    eos_token_id: [151329, 151336, 151338],
    head_dim: 128,
    attention_bias: true,
    attention_dropout: 0.0,
    first_k_dense_replace: 1,
    hidden_act: 'silu',
    hidden_size: 4096,
    initializer_range: 0.02,
    intermediate_size: 10944,
    max_position_embeddings: 65536,
    moe_intermediate_size: 1408,
    n_group: 1,
    n_routed_experts: 128,
    n_shared_experts: 1,
    norm_topk_prob: true,
    num_attention_heads: 96,
    num_experts_per_tok: 8,
    num_hidden_layers: 46,
    num_key_value_heads: 8,
    partial_rotary_factor: 0.5,
    rms_norm_eps: 1e-5,
    rope_scaling: { rope_type: 'default', mrope_section: [8, 12, 12] },
    rope_theta: 10000.0,
    routed_scaling_factor: 1.0,
    topk_group: 1,
    use_cache: true,
    use_qk_norm: false,
    torch_dtype: 'bfloat16',
  },
  vision_config: { depth: 24, hidden_size: 1536, intermediate_size: 10944, num_heads: 12, out_hidden_size: 4096, patch_size: 14, spatial_merge_size: 2 },
  image_token_id: 151363,
  video_token_id: 151364,
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
  transformers_version: '4.55.0',
};

test("GLM-4.1V-9B-Thinking: GLM-4's layer (sandwich norms, fused gate_up, q/k/v biases) under text_config, M-RoPE read as GLM-4's partial interleaved RoPE", () => {
  const architecture = parse(GLM41V_9B);
  assert.equal(architecture.family.name, 'Llama');
  assert.ok(architecture.languageModelOnly);
  const c = architecture.config as LlamaConfig;
  assert.deepEqual(
    { type: c.modelType, hidden: c.hiddenSize, layers: c.numLayers, heads: c.numHeads, kvHeads: c.numKvHeads, headDim: c.headDim, vocab: c.vocabSize, dtype: c.dtype },
    { type: 'glm4v_text', hidden: 4096, layers: 40, heads: 32, kvHeads: 2, headDim: 128, vocab: 151552, dtype: 'bf16' },
  );
  assert.deepEqual([c.attentionBias, c.outputBias, c.mlpBias, c.qkNorm, c.fusedGateUp, c.interleavedRope], [true, false, false, false, true, true]);
  assert.deepEqual([c.normNames.attentionOutput, c.normNames.mlpOutput], ['post_self_attn_layernorm', 'post_mlp_layernorm']);
  assert.deepEqual([c.ropeTheta, c.ropeScaling, c.rotaryDim, c.contextLength, c.rmsNormEps], [1e4, { type: 'default' }, 64, 65536, 1e-5]);
  assert.deepEqual([c.eosTokenIds, c.tieWordEmbeddings], [[151329, 151336, 151338], false]);
  assert.ok(c.slidingWindows.every((w) => w === null));
});

test("GLM-4.1V's transformers parameter count (its language model and lm_head), read under model.language_model.* beside model.visual.*", () => {
  // Glm4vForConditionalGeneration.from_config(this config) on the meta device, its model.visual.* parameters left out.
  assert.equal(parameterCount(createModel(parse(GLM41V_9B), 64)), 9_400_279_040);
  const names = createModel(parse({ ...GLM41V_9B, text_config: { ...GLM41V_9B.text_config, num_hidden_layers: 1 } }), 64)
    .parameters()
    .map((p) => p.name);
  assert.ok(names.includes('model.layers.0.post_mlp_layernorm.weight') && names.includes('model.layers.0.self_attn.k_proj.bias') && names.includes('lm_head.weight'));
  assert.ok(!names.some((n) => n.includes('visual') || n.endsWith('o_proj.bias')));
});

test("GLM-4.1V's class defaults: q/k/v biases whatever attention_bias says, the whole head rotating without partial_rotary_factor", () => {
  for (const attention_bias of [false, undefined]) {
    const c = llama(withText(GLM41V_9B, { attention_bias }));
    assert.deepEqual([c.attentionBias, c.outputBias], [true, false], `attention_bias ${attention_bias}`);
  }
  const { partial_rotary_factor: _p, rope_theta: _t, rope_scaling: _r, max_position_embeddings: _m, rms_norm_eps: _e, num_key_value_heads: _k, ...bare } = GLM41V_9B.text_config;
  // Glm4vTextConfig's defaults: no partial_rotary_factor (1: 128 rotary dims, whose 64 frequencies the sections
  // must cover), rope_theta 1e4, 32768 positions, rms_norm_eps 1e-5, 2 KV heads.
  const c = llama({ ...GLM41V_9B, text_config: { ...bare, rope_scaling: { rope_type: 'default', mrope_section: [16, 24, 24] } } });
  assert.deepEqual([c.rotaryDim, c.ropeTheta, c.contextLength, c.rmsNormEps, c.numKvHeads], [128, 1e4, 32768, 1e-5, 2]);
  // transformers 5's spelling, the partial factor in the RoPE dict, reads alike.
  const { partial_rotary_factor: factor, rope_theta: theta, rope_scaling: rope, ...v5 } = GLM41V_9B.text_config;
  assert.deepEqual(llama({ ...GLM41V_9B, text_config: { ...v5, rope_parameters: { ...rope, rope_theta: theta, partial_rotary_factor: factor } } }), llama(GLM41V_9B));
});

test('GLM-4.5V: GLM-4.5-Air\'s decoder under text_config, without q/k norms or MTP layers (the text config class reads neither)', () => {
  const architecture = parse(GLM45V);
  assert.equal(architecture.family.name, 'GLM-4-MoE');
  const c = architecture.config as Glm4MoeConfig;
  assert.deepEqual(
    { type: c.modelType, hidden: c.hiddenSize, layers: c.numLayers, heads: c.numHeads, kvHeads: c.numKvHeads, headDim: c.headDim, rotary: c.rotaryDim, dtype: c.dtype },
    { type: 'glm4v_moe_text', hidden: 4096, layers: 46, heads: 96, kvHeads: 8, headDim: 128, rotary: 64, dtype: 'bf16' },
  );
  assert.deepEqual([c.attentionBias, c.outputBias, c.qkNorm, c.interleavedRope, c.tieWordEmbeddings], [true, false, false, false, false]);
  assert.deepEqual([c.ropeTheta, c.ropeScaling, c.contextLength, c.intermediateSize], [1e4, { type: 'default' }, 65536, 10944]);
  assert.deepEqual(c.sparseLayers, Array.from({ length: 46 }, (_, i) => i >= 1));
  assert.deepEqual(c.moe.routing, { topK: 8, scoring: 'sigmoid', selectionBias: true, groups: null, normalize: true, scale: 1 });
  // use_qk_norm and num_nextn_predict_layers are Glm4MoeConfig's keys, which Glm4vMoeTextConfig's layers never read.
  const ignored = glm4Moe(withText(GLM45V, { use_qk_norm: true, num_nextn_predict_layers: 1 }));
  assert.deepEqual([ignored.qkNorm, ignored.numNextnPredictLayers, ignored.sparseLayers.length], [false, 0, 46]);
  // Glm4vMoeTextConfig's default attention_bias is true (Glm4MoeConfig's false).
  const { attention_bias: _b, max_position_embeddings: _m, ...bare } = GLM45V.text_config;
  const d = glm4Moe({ ...GLM45V, text_config: bare });
  assert.deepEqual([d.attentionBias, d.contextLength], [true, 65536]);
});

test("GLM-4.5V's transformers parameter count: the language model and lm_head, experts per expert as the Hub stores them", () => {
  // Glm4vMoeForConditionalGeneration.from_config(this config) on the meta device, its model.visual.* parameters left out;
  // Keel's list adds the 45 MoE layers' e_score_correction_bias buffers (128 each), which the checkpoint stores.
  const model = createModel(parse(GLM45V, ['model.language_model.layers.1.mlp.experts.0.gate_proj.weight', 'model.visual.blocks.0.attn.qkv.weight']), 64);
  assert.equal(parameterCount(model), 106_852_245_504 + 45 * 128);
  assert.ok(model.parameters().some((p) => p.name === 'model.layers.1.mlp.experts.127.down_proj.weight'));
});

test('GLM-4.1V and GLM-4.5V tie the LM head where the wrapper or text_config says so (their config classes forward a true text_config one)', () => {
  for (const json of [GLM41V_9B, GLM45V]) {
    const tied = (wrapper: boolean | undefined, own: boolean | undefined) =>
      parse({ ...withText(json, { tie_word_embeddings: own }), tie_word_embeddings: wrapper }).config.tieWordEmbeddings;
    assert.deepEqual([tied(true, false), tied(false, true), tied(undefined, true), tied(false, false), tied(undefined, undefined)], [true, true, true, false, false], json.model_type);
  }
});

test('GLM-4.xV configs Keel cannot serve are refused, naming the key', () => {
  // Sections must split the rotary frequencies (64 rotary dims: 32), as transformers' torch.split needs.
  assertInvalidModel(() => parse(withText(GLM41V_9B, { rope_scaling: { rope_type: 'default', mrope_section: [8, 12, 8] } })), 'test/config.json text_config rope_scaling', 'mrope_section [8,12,8]', 'sums to 28', '32 frequencies of 64 rotary dims');
  assertInvalidModel(() => parse(withText(GLM45V, { rope_scaling: null, partial_rotary_factor: 1 })), 'mrope_section [8,12,12] (the default)', '64 frequencies of 128 rotary dims');
  // Neither text config class renames an "mrope" type (Qwen2-VL's do): transformers' rotary has none.
  for (const json of [GLM41V_9B, GLM45V]) assertInvalidModel(() => parse(withText(json, { rope_scaling: { type: 'mrope', mrope_section: [8, 12, 12] } })), 'rope type "mrope" is not supported');
  // GLM-4.1V's attention sizes heads by hidden_size alone, while its rotary would read head_dim.
  assertInvalidModel(() => parse(withText(GLM41V_9B, { head_dim: 96 })), 'head_dim 96', 'hidden_size / num_attention_heads (4096 / 32)', 'glm4v_text');
  assertInvalidModel(() => parse(withText(GLM45V, { model_type: 'glm4_moe' })), 'text_config', 'model_type "glm4_moe"', 'glm4v_moe_text');
});
