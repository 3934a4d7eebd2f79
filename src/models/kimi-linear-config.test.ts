import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parameterCount } from '../bench/roofline.ts';
import { assertInvalidModel } from '../../test/helpers/invalid-model.ts';
import type { KimiLinearConfig } from './kimi-linear.ts';
import { createModel, parseModelArchitecture } from './registry.ts';

const parse = (json: Record<string, unknown>) => parseModelArchitecture(json, 'test/config.json').config as KimiLinearConfig;

function rejects(json: Record<string, unknown>, ...fragments: string[]): void {
  assertInvalidModel(() => parseModelArchitecture(json, 'test/config.json'), ...fragments);
}

/** Kimi-Linear-48B-A3B's config.json shape, cut to 4 layers (the fourth MLA), with the keys transformers does not read. */
const KIMI_LINEAR_48B = {
  architectures: ['KimiLinearForCausalLM'],
  model_type: 'kimi_linear',
  vocab_size: 163840,
  hidden_size: 2304,
  intermediate_size: 9216,
  num_hidden_layers: 4,
  num_attention_heads: 32,
  num_key_value_heads: 32,
  head_dim: 72,
  kv_lora_rank: 512,
  q_lora_rank: null,
  qk_nope_head_dim: 128,
  qk_rope_head_dim: 64,
  v_head_dim: 128,
  mla_use_nope: true,
  num_experts: 256,
  num_experts_per_token: 8,
  num_shared_experts: 1,
  moe_intermediate_size: 1024,
  first_k_dense_replace: 1,
  moe_layer_freq: 1,
  moe_renormalize: true,
  moe_router_activation_func: 'sigmoid',
  num_expert_group: 1,
  topk_group: 1,
  routed_scaling_factor: 2.446,
  rms_norm_eps: 1e-5,
  model_max_length: 1048576,
  tie_word_embeddings: false,
  bos_token_id: 163584,
  eos_token_id: 163586,
  pad_token_id: 163839,
  linear_attn_config: { full_attn_layers: [4], kda_layers: [1, 2, 3], head_dim: 128, num_heads: 32, short_conv_kernel_size: 4 },
};

test('Kimi Linear: KDA and MLA layers from linear_attn_config (1-indexed), DeepSeek-V3 routing under its own key names, no RoPE', () => {
  const c = parse(KIMI_LINEAR_48B);
  assert.deepEqual(c.linearLayers, [true, true, true, false]);
  assert.deepEqual(c.sparseLayers, [false, true, true, true]);
  assert.deepEqual(c.kda, { numHeads: 32, headDim: 128, convKernel: 4 });
  assert.deepEqual(c.mla, { numHeads: 32, queryRank: null, latentDim: 512, nopeDim: 128, ropeDim: 64, valueDim: 128, bias: false });
  assert.equal(c.contextLength, 1048576);
  assert.deepEqual(c.moe, {
    numExperts: 256,
    numExpertsPerToken: 8,
    expertIntermediateSize: 1024,
    sharedIntermediateSize: 1024,
    fusedExperts: false,
    routing: { topK: 8, scoring: 'sigmoid', selectionBias: true, groups: null, normalize: true, scale: 2.446 },
  });
  // transformers' attribute_map aliases read the same; layer_types wins over linear_attn_config.
  const aliased = parse({ ...KIMI_LINEAR_48B, num_experts: undefined, num_local_experts: 256, num_experts_per_token: undefined, num_experts_per_tok: 8, moe_renormalize: undefined, norm_topk_prob: true });
  assert.deepEqual(aliased.moe, c.moe);
  const typed = parse({ ...KIMI_LINEAR_48B, layer_types: ['full_attention', 'linear_attention', 'linear_attention', 'linear_attention'] });
  assert.deepEqual(typed.linearLayers, [false, true, true, true]);
  // No shared key part at all (qk_rope_head_dim 0), which transformers runs too: MLA of the nope dims alone.
  const noShared = createModel(parseModelArchitecture({ ...KIMI_LINEAR_48B, qk_rope_head_dim: 0 }, 'test/config.json'), 64);
  assert.deepEqual(noShared.parameters().find((p) => p.name === 'model.layers.3.self_attn.kv_a_proj_with_mqa.weight')?.shape, [512, 2304]);
  // KimiLinearForCausalLM never ties its lm_head to the embedding.
  assert.equal(parse({ ...KIMI_LINEAR_48B, tie_word_embeddings: true }).tieWordEmbeddings, false);
});

test("Kimi Linear takes KimiLinearConfig's defaults: every fourth layer after the first MLA, layer 0 dense", () => {
  const c = parse({ model_type: 'kimi_linear', vocab_size: 64, hidden_size: 32, num_hidden_layers: 9 });
  assert.deepEqual(c.linearLayers, [true, true, true, true, false, true, true, true, false]);
  assert.deepEqual(c.sparseLayers, [false, true, true, true, true, true, true, true, true]);
  assert.deepEqual(c.kda, { numHeads: 32, headDim: 128, convKernel: 4 });
  assert.deepEqual([c.moe.numExperts, c.moe.numExpertsPerToken, c.moe.routing.scale, c.intermediateSize, c.contextLength], [256, 8, 2.446, 9216, 1048576]);
});

test("Kimi Linear reads transformers' parameter count and the Hub's tensor names", () => {
  const model = createModel(parseModelArchitecture(KIMI_LINEAR_48B, 'test/config.json'), 64);
  // KimiLinearForCausalLM(this config) on the meta device holds 6,425,175,264 parameters; Keel also
  // counts the three routers' e_score_correction_bias buffers.
  assert.equal(parameterCount(model), 6_425_175_264 + 3 * 256);
  const shapes = new Map(model.parameters().map((p) => [p.name, p.shape]));
  assert.deepEqual(shapes.get('model.layers.0.self_attn.q_conv1d.weight'), [4096, 1, 4]);
  assert.deepEqual(shapes.get('model.layers.0.self_attn.A_log'), [1, 1, 32, 1]);
  assert.deepEqual(shapes.get('model.layers.0.self_attn.dt_bias'), [4096]);
  assert.deepEqual(shapes.get('model.layers.0.self_attn.f_b_proj.weight'), [4096, 128]);
  assert.deepEqual(shapes.get('model.layers.0.mlp.gate_proj.weight'), [9216, 2304]);
  assert.deepEqual(shapes.get('model.layers.1.block_sparse_moe.experts.255.w2.weight'), [2304, 1024]);
  assert.deepEqual(shapes.get('model.layers.3.self_attn.kv_a_proj_with_mqa.weight'), [576, 2304]);
  assert.deepEqual(model.kvLayers[0], { kind: 'state', convElements: 3 * 3 * 4096, recurrentElements: 32 * 128 * 128 });
  assert.equal(model.kvLayers[3].kind, 'mla');

  // A query LoRA, biased MLA, two shared experts, KDA heads of their own width: transformers' count again.
  const small = {
    model_type: 'kimi_linear', vocab_size: 1000, hidden_size: 256, intermediate_size: 512, num_hidden_layers: 6, num_attention_heads: 4,
    kv_lora_rank: 64, q_lora_rank: 48, qk_nope_head_dim: 32, qk_rope_head_dim: 16, v_head_dim: 24, num_experts: 8, num_experts_per_token: 2,
    num_shared_experts: 2, moe_intermediate_size: 64, first_k_dense_replace: 2, attention_bias: true,
    linear_attn_config: { head_dim: 32, num_heads: 6, short_conv_kernel_size: 3 },
  };
  assert.equal(parameterCount(createModel(parseModelArchitecture(small, 'test/config.json'), 64)), 4_501_294 + 4 * 8);
});

test('Kimi Linear refuses configs it cannot run, naming the key', () => {
  rejects({ ...KIMI_LINEAR_48B, linear_attn_config: { ...KIMI_LINEAR_48B.linear_attn_config, kda_layers: [1, 2] } }, 'kda_layers', 'full_attn_layers');
  rejects({ ...KIMI_LINEAR_48B, linear_attn_config: { ...KIMI_LINEAR_48B.linear_attn_config, full_attn_layers: [0] } }, 'full_attn_layers');
  rejects({ ...KIMI_LINEAR_48B, num_experts_per_tok: 4 }, 'num_experts_per_token', 'num_experts_per_tok');
  rejects({ ...KIMI_LINEAR_48B, hidden_act: 'gelu' }, 'hidden_act');
  rejects({ ...KIMI_LINEAR_48B, num_key_value_heads: 8 }, 'num_key_value_heads');
  rejects({ ...KIMI_LINEAR_48B, mlp_layer_types: ['dense'] }, 'mlp_layer_types');
  rejects({ ...KIMI_LINEAR_48B, layer_types: ['mamba', 'mamba', 'mamba', 'mamba'] }, 'layer_types');
});
