import assert from 'node:assert/strict';
import { test } from 'node:test';
import { kvBytesPerToken } from '../step/kv-cache-layout.ts';
import type { DeepseekConfig } from './deepseek.ts';
import { createModel, parseModelArchitecture } from './registry.ts';
import { assertInvalidModel } from '../../test/helpers/invalid-model.ts';

const parse = (json: Record<string, unknown>) => parseModelArchitecture(json, 'test/config.json').config as DeepseekConfig;

function rejects(json: Record<string, unknown>, ...fragments: string[]): void {
  assertInvalidModel(() => parseModelArchitecture(json, 'test/config.json'), ...fragments);
}

/** deepseek-ai/DeepSeek-V3.2-Exp's config.json as published (transformers 4.x keys), less its fp8 quantization_config. */
const DEEPSEEK_V32 = {
  architectures: ['DeepseekV32ForCausalLM'],
  attention_bias: false,
  bos_token_id: 0,
  eos_token_id: 1,
  first_k_dense_replace: 3,
  hidden_act: 'silu',
  hidden_size: 7168,
  index_head_dim: 128,
  index_n_heads: 64,
  index_topk: 2048,
  intermediate_size: 18432,
  kv_lora_rank: 512,
  max_position_embeddings: 163840,
  model_type: 'deepseek_v32',
  moe_intermediate_size: 2048,
  moe_layer_freq: 1,
  n_group: 8,
  n_routed_experts: 256,
  n_shared_experts: 1,
  norm_topk_prob: true,
  num_attention_heads: 128,
  num_experts_per_tok: 8,
  num_hidden_layers: 61,
  num_key_value_heads: 128,
  num_nextn_predict_layers: 1,
  q_lora_rank: 1536,
  qk_nope_head_dim: 128,
  qk_rope_head_dim: 64,
  rms_norm_eps: 1e-6,
  rope_scaling: { beta_fast: 32, beta_slow: 1, factor: 40, mscale: 1.0, mscale_all_dim: 1.0, original_max_position_embeddings: 4096, type: 'yarn' },
  rope_theta: 10000,
  routed_scaling_factor: 2.5,
  scoring_func: 'sigmoid',
  tie_word_embeddings: false,
  topk_group: 4,
  topk_method: 'noaux_tc',
  torch_dtype: 'bfloat16',
  v_head_dim: 128,
  vocab_size: 129280,
};

test('DeepSeek-V3.2-Exp as published: V3\'s MLA and routing, a 64 × 128 indexer keeping 2,048 positions in every layer', () => {
  const c = parse(DEEPSEEK_V32);
  assert.deepEqual(c.sparseAttention, { numHeads: 64, headDim: 128, topK: 2048 });
  assert.deepEqual([c.numHeads, c.queryRank, c.latentDim, c.ropeDim], [128, 1536, 512, 64]);
  assert.equal(c.interleavedRope, true);
  assert.deepEqual(c.sparseLayers, Array.from({ length: 62 }, (_, i) => i >= 3));
  assert.deepEqual(c.moe.routing, { topK: 8, scoring: 'sigmoid', selectionBias: true, groups: { numGroups: 8, topkGroups: 4, score: 'top2-sum' }, normalize: true, scale: 2.5 });
  const model = createModel(parseModelArchitecture(DEEPSEEK_V32, 'test/config.json'), 64);
  const names = new Set(model.parameters().map((p) => p.name));
  for (const tensor of ['wq_b.weight', 'wk.weight', 'k_norm.weight', 'k_norm.bias', 'weights_proj.weight']) {
    assert.ok(names.has(`model.layers.60.self_attn.indexer.${tensor}`), `reads the indexer's ${tensor}`);
  }
  // Each token caches its latent row and, beside it, the indexer's 128-value key, both in the cache's dtype.
  assert.deepEqual(model.kvLayers[0], { kind: 'mla', latentDim: 512, ropeDim: 64, indexKeys: { keyDim: 128 } });
  assert.equal(kvBytesPerToken(model.kvLayers, 2), 61 * (576 + 128) * 2);
  assert.equal(kvBytesPerToken(model.kvLayers, 2, 'fp8_e4m3'), 61 * (576 + 128 + 4));
  assert.equal(kvBytesPerToken(model.kvLayers, 2, 'int8'), 61 * (576 + 4 + 128 + 4));
});

test('V3.2 rotates MLA\'s rope dims in interleaved pairs whatever rope_interleave says, as transformers does', () => {
  assert.equal(parse({ ...DEEPSEEK_V32, rope_interleave: false }).interleavedRope, true);
});

test('V3.2 takes mlp_layer_types when given, as transformers\' DeepseekV32Config does', () => {
  const c = parse({ ...DEEPSEEK_V32, num_hidden_layers: 3, num_nextn_predict_layers: 0, mlp_layer_types: ['sparse', 'dense', 'sparse'] });
  assert.deepEqual(c.sparseLayers, [true, false, true]);
});

test('V3.2 configs the indexer cannot run are rejected, naming the key', () => {
  rejects({ ...DEEPSEEK_V32, q_lora_rank: null }, 'q_lora_rank', 'indexer');
  rejects({ ...DEEPSEEK_V32, index_head_dim: 32 }, 'index_head_dim (32)', 'qk_rope_head_dim (64)');
  rejects({ ...DEEPSEEK_V32, index_topk: 0 }, 'index_topk');
  rejects({ ...DEEPSEEK_V32, layer_types: ['full_attention'] }, 'layer_types');
  rejects({ ...DEEPSEEK_V32, mlp_layer_types: ['dense'] }, 'mlp_layer_types', '61 layers');
});
