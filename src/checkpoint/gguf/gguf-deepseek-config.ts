import { invalidModel } from '../../errors.ts';
import type { ConfigBase } from './gguf-config-base.ts';
import { ropeParameters } from './gguf-rope.ts';

/** llama.cpp's expert_gating_func values. */
const SOFTMAX = 1;
const SIGMOID = 2;
/** How llama.cpp's converter stores mscale_all_dim: as yarn_log_multiplier = 0.1 · mscale_all_dim. */
const YARN_LOG_MUL_PER_MSCALE = 0.1;

/**
 * DeepSeek-V2 and -V3 from llama.cpp's deepseek2 keys. Sigmoid routing (`expert_gating_func` 2,
 * with the exp_probs_b biases) is V3's; softmax (1, or no key: older V2 files) V2's. MLA's head
 * sizes: newer files store MLA as one KV head of kv_lora_rank + rope dims with the decompressed
 * sizes in `attention.key_length_mla`/`value_length_mla`, older ones those sizes as
 * `attention.key_length`/`value_length`. llama.cpp's YaRN for DeepSeek leaves cos/sin unscaled and
 * multiplies the softmax scale by mscale(factor, mscale_all_dim)², mscale_all_dim being
 * `rope.scaling.yarn_log_multiplier` / 0.1: in transformers' terms mscale = mscale_all_dim.
 */
export function deepseekConfig({ m, arch, key, common, tensors }: ConfigBase): Record<string, unknown> {
  const heads = common.num_attention_heads as number;
  const layers = common.num_hidden_layers as number;
  const gating = m.uint(key('expert_gating_func'), SOFTMAX);
  if (gating !== SOFTMAX && gating !== SIGMOID) throw invalidModel(`${m.source}: ${key('expert_gating_func')} ${gating} is not DeepSeek's softmax (1) or sigmoid (2)`);
  const v3 = gating === SIGMOID;
  const biased = Array.from({ length: layers }, (_, i) => tensors.has(`model.layers.${i}.mlp.gate.e_score_correction_bias`)).some(Boolean);
  if (v3 !== biased) throw invalidModel(`${m.source}: ${v3 ? 'sigmoid routing without' : 'softmax routing with'} exp_probs_b biases is neither DeepSeek-V2 nor V3`);
  const mla = m.has(key('attention.key_length_mla'));
  const qkHead = m.uint(key(mla ? 'attention.key_length_mla' : 'attention.key_length'));
  const valueHead = m.uint(key(mla ? 'attention.value_length_mla' : 'attention.value_length'));
  const ropeDim = m.uint(key('rope.dimension_count'));
  if (ropeDim >= qkHead) throw invalidModel(`${m.source}: ${key('rope.dimension_count')} ${ropeDim} leaves no un-rotated part of a ${qkHead}-wide query/key head`);
  const kvHeads = m.uint(key('attention.head_count_kv'), heads);
  if (kvHeads !== (mla ? 1 : heads)) throw invalidModel(`${m.source}: ${key('attention.head_count_kv')} ${kvHeads}: MLA is stored as ${mla ? '1 head' : `${heads} heads`}`);
  const config: Record<string, unknown> = {
    architectures: [v3 ? 'DeepseekV3ForCausalLM' : arch.dense.className],
    model_type: v3 ? 'deepseek_v3' : arch.dense.modelType,
    ...common,
    intermediate_size: m.uint(key('feed_forward_length')),
    num_key_value_heads: heads,
    q_lora_rank: m.uint(key('attention.q_lora_rank'), 0) || null,
    kv_lora_rank: m.uint(key('attention.kv_lora_rank')),
    qk_nope_head_dim: qkHead - ropeDim,
    qk_rope_head_dim: ropeDim,
    v_head_dim: valueHead,
    hidden_act: 'silu',
    attention_bias: tensors.has('model.layers.0.self_attn.kv_a_proj_with_mqa.bias'),
    rope_parameters: deepseekRope(m, key, ropeDim),
    ...moeFields(m, key, layers, v3),
  };
  if (v3) config.rope_interleave = true;
  return config;
}

function deepseekRope(m: ConfigBase['m'], key: ConfigBase['key'], ropeDim: number): Record<string, unknown> {
  const rope = ropeParameters(m, 'deepseek2', ropeDim, null);
  if (rope.rope_type !== 'yarn') return rope;
  if (rope.attention_factor !== undefined && rope.attention_factor !== 1) {
    throw invalidModel(`${m.source}: ${key('rope.scaling.yarn_attn_factor')} ${rope.attention_factor} is not supported for DeepSeek (llama.cpp leaves its cos/sin unscaled)`);
  }
  const logMul = m.number(key('rope.scaling.yarn_log_multiplier'), 0);
  const mscale = logMul / YARN_LOG_MUL_PER_MSCALE;
  return { ...rope, attention_factor: 1, ...(mscale !== 0 ? { mscale, mscale_all_dim: mscale } : {}) };
}

/** The routed and shared experts; a file without experts is dense throughout. */
function moeFields(m: ConfigBase['m'], key: ConfigBase['key'], layers: number, v3: boolean): Record<string, unknown> {
  const experts = m.uint(key('expert_count'), 0);
  if (experts === 0) return { first_k_dense_replace: layers };
  const normalize = m.bool(key('expert_weights_norm'), false);
  if (normalize && !v3) throw invalidModel(`${m.source}: ${key('expert_weights_norm')} renormalizes DeepSeek-V2's expert weights, which transformers (and Keel) never do`);
  const groups = m.uint(key('expert_group_count'), 1);
  return {
    first_k_dense_replace: m.uint(key('leading_dense_block_count'), 0),
    n_routed_experts: experts,
    num_experts_per_tok: m.uint(key('expert_used_count')),
    moe_intermediate_size: m.uint(key('expert_feed_forward_length')),
    n_shared_experts: m.uint(key('expert_shared_count'), 0),
    routed_scaling_factor: m.number(key('expert_weights_scale'), 1),
    norm_topk_prob: normalize,
    topk_method: v3 ? 'noaux_tc' : groups > 1 ? 'group_limited_greedy' : 'greedy',
    n_group: groups,
    topk_group: m.uint(key('expert_group_used_count'), 1),
    scoring_func: v3 ? 'sigmoid' : 'softmax',
  };
}
