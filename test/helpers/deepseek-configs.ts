// Published DeepSeek config.json files, for the family's config tests.

/** deepseek-ai/DeepSeek-V3's config.json as published (transformers 4.x keys), less its fp8 quantization_config. */
export const DEEPSEEK_V3 = {
  architectures: ['DeepseekV3ForCausalLM'],
  attention_bias: false,
  bos_token_id: 0,
  eos_token_id: 1,
  first_k_dense_replace: 3,
  hidden_act: 'silu',
  hidden_size: 7168,
  intermediate_size: 18432,
  kv_lora_rank: 512,
  max_position_embeddings: 163840,
  model_type: 'deepseek_v3',
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

/** deepseek-ai/DeepSeek-V3.2-Exp's config.json as published (transformers 4.x keys), less its fp8 quantization_config: V3's with the indexer's keys. */
export const DEEPSEEK_V32 = {
  ...DEEPSEEK_V3,
  architectures: ['DeepseekV32ForCausalLM'],
  model_type: 'deepseek_v32',
  index_head_dim: 128,
  index_n_heads: 64,
  index_topk: 2048,
};

/**
 * GLM-5 (zai-org/GLM-5) as transformers' GlmMoeDsaConfig describes it, its defaults written out:
 * DeepSeek-V3.2's MLA and sparse attention at GLM's sizes (192 nope / 256 v per head, a 32-head
 * indexer), 78 layers, three dense, one MTP layer.
 */
export const GLM5 = {
  architectures: ['GlmMoeDsaForCausalLM'],
  model_type: 'glm_moe_dsa',
  vocab_size: 154880,
  hidden_size: 6144,
  intermediate_size: 12288,
  moe_intermediate_size: 2048,
  num_hidden_layers: 78,
  num_attention_heads: 64,
  num_key_value_heads: 64,
  n_shared_experts: 1,
  n_routed_experts: 256,
  routed_scaling_factor: 2.5,
  kv_lora_rank: 512,
  q_lora_rank: 2048,
  qk_rope_head_dim: 64,
  v_head_dim: 256,
  qk_nope_head_dim: 192,
  n_group: 1,
  topk_group: 1,
  num_experts_per_tok: 8,
  first_k_dense_replace: 3,
  max_position_embeddings: 202752,
  rms_norm_eps: 1e-5,
  rope_parameters: { rope_type: 'default', rope_theta: 1000000 },
  index_topk: 2048,
  index_head_dim: 128,
  index_n_heads: 32,
  num_nextn_predict_layers: 1,
  eos_token_id: [154820, 154827, 154829],
  torch_dtype: 'bfloat16',
};
