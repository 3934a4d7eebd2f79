import assert from 'node:assert/strict';
import { test } from 'node:test';
import { assertInvalidModel } from '../../test/helpers/invalid-model.ts';
import { stateBytesPerSlot } from '../step/kv-cache-layout.ts';
import { MtpHead } from './mtp-head.ts';
import type { QwenHybridConfig } from './qwen3-next.ts';
import { createModel, mtpLayersOf, parseModelArchitecture } from './registry.ts';

const parse = (json: Record<string, unknown>) => parseModelArchitecture(json, 'test/config.json');
const config = (json: Record<string, unknown>) => parse(json).config as QwenHybridConfig;

/** Qwen/Qwen3-Next-80B-A3B-Instruct's config.json. */
const QWEN3_NEXT_80B = {
  architectures: ['Qwen3NextForCausalLM'],
  attention_bias: false,
  attention_dropout: 0.0,
  bos_token_id: 151643,
  decoder_sparse_step: 1,
  eos_token_id: 151645,
  full_attention_interval: 4,
  head_dim: 256,
  hidden_act: 'silu',
  hidden_size: 2048,
  initializer_range: 0.02,
  intermediate_size: 5120,
  linear_conv_kernel_dim: 4,
  linear_key_head_dim: 128,
  linear_num_key_heads: 16,
  linear_num_value_heads: 32,
  linear_value_head_dim: 128,
  max_position_embeddings: 262144,
  mlp_only_layers: [],
  model_type: 'qwen3_next',
  moe_intermediate_size: 512,
  norm_topk_prob: true,
  num_attention_heads: 16,
  num_experts: 512,
  num_experts_per_tok: 10,
  num_hidden_layers: 48,
  num_key_value_heads: 2,
  output_router_logits: false,
  partial_rotary_factor: 0.25,
  rms_norm_eps: 1e-6,
  rope_scaling: null,
  rope_theta: 10000000,
  router_aux_loss_coef: 0.001,
  shared_expert_intermediate_size: 512,
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
  transformers_version: '4.57.0.dev0',
  use_cache: true,
  use_sliding_window: false,
  vocab_size: 151936,
};

/** A Qwen3.5-shaped vision-language config (transformers 5 spelling): the language model under text_config, mRoPE sections in rope_parameters. */
const QWEN3_5_VL = {
  architectures: ['Qwen3_5ForConditionalGeneration'],
  model_type: 'qwen3_5',
  tie_word_embeddings: false,
  image_token_id: 248056,
  text_config: {
    model_type: 'qwen3_5_text',
    vocab_size: 248320,
    hidden_size: 4096,
    intermediate_size: 12288,
    num_hidden_layers: 8,
    num_attention_heads: 16,
    num_key_value_heads: 4,
    head_dim: 256,
    linear_num_key_heads: 16,
    linear_num_value_heads: 32,
    linear_key_head_dim: 128,
    linear_value_head_dim: 128,
    layer_types: ['linear_attention', 'linear_attention', 'linear_attention', 'full_attention', 'linear_attention', 'linear_attention', 'linear_attention', 'full_attention'],
    rope_parameters: { rope_type: 'default', rope_theta: 10000000, partial_rotary_factor: 0.25, mrope_section: [11, 11, 10], mrope_interleaved: true },
    eos_token_id: 248044,
    dtype: 'bfloat16',
  },
  vision_config: { model_type: 'qwen3_5', depth: 2, hidden_size: 64 },
};

test('Qwen3-Next-80B-A3B: three Gated DeltaNet layers to one gated full-attention layer, 512 experts, a quarter of each head rotated', () => {
  const c = config(QWEN3_NEXT_80B);
  assert.deepEqual(c.linearLayers.map((linear, i) => (linear ? -1 : i)).filter((i) => i >= 0), [3, 7, 11, 15, 19, 23, 27, 31, 35, 39, 43, 47]);
  assert.deepEqual(c.deltaNet, { numKeyHeads: 16, numValueHeads: 32, keyDim: 128, valueDim: 128, convKernel: 4, projections: 'grouped' });
  assert.equal(c.rotaryDim, 64);
  assert.equal(c.ropeTheta, 1e7);
  assert.equal(c.contextLength, 262144);
  assert.deepEqual(c.moe, { moeIntermediateSize: 512, numExperts: 512, numExpertsPerToken: 10, normTopkProb: true, sharedExpertIntermediateSize: 512 });
  assert.ok(c.sparseLayers.every(Boolean));
  const layers = createModel(parse(QWEN3_NEXT_80B), 4096).kvLayers;
  // Per slot: the conv's last 3 inputs of q|k|v (2 · 16 · 128 + 32 · 128 channels) and 32 heads' 128 × 128 state.
  assert.deepEqual(layers[0], { kind: 'state', convElements: 3 * 8192, recurrentElements: 32 * 128 * 128 });
  assert.deepEqual(layers[3], { kind: 'attention', numKvHeads: 2, headDim: 256, slidingWindow: null });
  assert.equal(stateBytesPerSlot(layers), 36 * 4 * (3 * 8192 + 32 * 128 * 128));
});

test('Qwen3.5 is served as its language model: separate projections, dense MLP, and mRoPE sections read as plain RoPE for text positions', () => {
  const architecture = parse(QWEN3_5_VL);
  const c = architecture.config as QwenHybridConfig;
  assert.equal(architecture.languageModelOnly, true);
  assert.equal(c.modelType, 'qwen3_5_text');
  assert.equal(c.deltaNet.projections, 'separate');
  assert.equal(c.moe, null);
  assert.equal(c.intermediateSize, 12288);
  assert.deepEqual([c.rotaryDim, c.ropeTheta, c.ropeScaling], [64, 1e7, { type: 'default' }]);
  assert.deepEqual(c.linearLayers, [true, true, true, false, true, true, true, false]);
});

test('Qwen3.5-MoE: every layer a MoE block renormalizing its top k, whatever norm_topk_prob says', () => {
  const text = { ...QWEN3_5_VL.text_config, model_type: 'qwen3_5_moe_text', num_experts: 8, num_experts_per_tok: 2, moe_intermediate_size: 64, shared_expert_intermediate_size: 64, norm_topk_prob: false };
  const c = config(text);
  assert.ok(c.sparseLayers.every(Boolean));
  assert.equal(c.moe?.normTopkProb, true);
  assert.equal(c.intermediateSize, null);
});

test('hybrid configs the engine cannot run are refused by key', () => {
  assertInvalidModel(() => parse({ ...QWEN3_NEXT_80B, layer_types: ['linear_attention'] }), 'layer_types', '48 layers');
  assertInvalidModel(() => parse({ ...QWEN3_NEXT_80B, linear_num_value_heads: 24 }), 'linear_num_value_heads (24)', 'linear_num_key_heads (16)');
  assertInvalidModel(() => parse({ ...QWEN3_NEXT_80B, hidden_act: 'gelu' }), 'hidden_act', 'silu');
  assertInvalidModel(() => parse({ ...QWEN3_NEXT_80B, partial_rotary_factor: 1.5 }), 'partial_rotary_factor 1.5');
  assertInvalidModel(() => parse({ ...QWEN3_5_VL, text_config: { ...QWEN3_5_VL.text_config, model_type: 'qwen3_next' } }), 'text_config', 'qwen3_5_text');
});

test('num_experts 0 makes every Qwen3-Next layer a dense MLP', () => {
  const c = config({ ...QWEN3_NEXT_80B, num_experts: 0 });
  assert.equal(c.moe, null);
  assert.ok(c.sparseLayers.every((sparse) => !sparse));
});

test("the MTP layer (mtp_num_hidden_layers) reads mtp.*: fc over [embedding, hidden] with its pre-fc norms, one gated full-attention layer (Qwen3-Next's a MoE block, Qwen3.5's dense), mtp.norm, and the target's LM head", () => {
  const mtpTensors = (json: Record<string, unknown>) => {
    const architecture = parse(json);
    const head = MtpHead.forTarget(architecture.config, mtpLayersOf(architecture.config), createModel(architecture, 64), null, 64);
    return head.parameters().map((p) => ({ name: p.name, shape: p.shape }));
  };
  const around = (h: number) => [
    { name: 'mtp.pre_fc_norm_embedding.weight', shape: [h] },
    { name: 'mtp.pre_fc_norm_hidden.weight', shape: [h] },
    { name: 'mtp.fc.weight', shape: [h, 2 * h] },
    { name: 'mtp.norm.weight', shape: [h] },
  ];
  const next = mtpTensors({ ...QWEN3_NEXT_80B, mtp_num_hidden_layers: 1, mtp_use_dedicated_embeddings: false });
  assert.ok(next.every((t) => t.name.startsWith('mtp.')), 'the embedding and LM head are the target\'s');
  for (const t of around(2048)) assert.deepEqual(next.find((n) => n.name === t.name), t);
  assert.deepEqual(next.find((t) => t.name === 'mtp.layers.0.self_attn.q_proj.weight')?.shape, [2 * 16 * 256, 2048], 'each head\'s query and output gate');
  assert.equal(next.filter((t) => /^mtp\.layers\.0\.mlp\.experts\.\d+\.down_proj\.weight$/.test(t.name)).length, 512);
  assert.ok(next.some((t) => t.name === 'mtp.layers.0.mlp.shared_expert_gate.weight'));
  const vl = mtpTensors({ ...QWEN3_5_VL, text_config: { ...QWEN3_5_VL.text_config, mtp_num_hidden_layers: 1 } });
  for (const t of around(4096)) assert.deepEqual(vl.find((n) => n.name === t.name), t);
  assert.deepEqual(vl.find((t) => t.name === 'mtp.layers.0.mlp.gate_proj.weight')?.shape, [12288, 4096]);
  assert.ok(!vl.some((t) => t.name.includes('linear_attn') || t.name.includes('experts')));
});
