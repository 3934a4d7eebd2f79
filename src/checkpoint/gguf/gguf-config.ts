import { invalidModel } from '../../errors.ts';
import type { GgufArchitecture, TensorSource } from './gguf-architectures.ts';
import { ropeParameters } from './gguf-rope.ts';
import type { GgufMetadata } from './metadata.ts';

/** The special token ids a GGUF vocabulary names (tokenizer.ggml.*_token_id). */
export interface SpecialTokenIds {
  bos: number | null;
  /** eos first, then the end-of-turn and end-of-message tokens llama.cpp also stops at. */
  eos: number[];
  pad: number | null;
}

export function specialTokenIds(m: GgufMetadata): SpecialTokenIds {
  const id = (key: string) => (m.has(`tokenizer.ggml.${key}`) ? m.uint(`tokenizer.ggml.${key}`) : null);
  const eos = [id('eos_token_id'), id('eot_token_id'), id('eom_token_id')].filter((v): v is number => v !== null);
  return { bos: id('bos_token_id'), eos: [...new Set(eos)], pad: id('padding_token_id') };
}

/**
 * config.json as transformers would write it for the model a GGUF file holds, from llama.cpp's
 * hyperparameter keys (`ARCH.block_count`, `ARCH.attention.head_count`, ...) and the tensors
 * (vocabulary size from the embedding, tied embeddings when there is no `output.weight`, biases
 * where the file has them). `freqFactors` is `rope_freqs.weight`, when the file has one.
 */
export function ggufConfig(m: GgufMetadata, arch: GgufArchitecture, tensors: ReadonlyMap<string, TensorSource>, freqFactors: Float32Array | null): Record<string, unknown> {
  const a = arch.name;
  const key = (k: string) => `${a}.${k}`;
  const embedding = tensors.get('model.embed_tokens.weight');
  if (embedding === undefined) throw invalidModel(`${m.source} has no token_embd.weight`);
  const hidden = m.uint(key('embedding_length'));
  const heads = m.uint(key('attention.head_count'));
  const headDim = m.uint(key('attention.key_length'), hidden / heads);
  const valueDim = m.uint(key('attention.value_length'), headDim);
  if (valueDim !== headDim) throw invalidModel(`${m.source}: ${key('attention.value_length')} ${valueDim} differs from the key length ${headDim}, which ${a} models do not do`);
  const ropeDim = m.uint(key('rope.dimension_count'), headDim);
  if (ropeDim !== headDim) throw invalidModel(`${m.source}: ${key('rope.dimension_count')} ${ropeDim} rotates part of a ${headDim}-wide head, which Keel does not do for ${a}`);
  const experts = m.uint(key('expert_count'), 0);
  const kind = experts > 0 ? arch.moe : arch.dense;
  if (kind === null) throw invalidModel(`${m.source}: a GGUF ${a} model with ${key('expert_count')} ${experts} is not supported`);
  const ids = specialTokenIds(m);
  const config: Record<string, unknown> = {
    architectures: [kind.className],
    model_type: kind.modelType,
    vocab_size: embedding.shape[0],
    hidden_size: hidden,
    intermediate_size: m.has(key('feed_forward_length')) || experts === 0 ? m.uint(key('feed_forward_length')) : m.uint(key('expert_feed_forward_length')),
    num_hidden_layers: m.uint(key('block_count')),
    num_attention_heads: heads,
    num_key_value_heads: m.uint(key('attention.head_count_kv'), heads),
    head_dim: headDim,
    hidden_act: 'silu',
    rms_norm_eps: m.number(key('attention.layer_norm_rms_epsilon')),
    max_position_embeddings: m.uint(key('context_length')),
    rope_parameters: ropeParameters(m, a, headDim, freqFactors),
    tie_word_embeddings: !tensors.has('lm_head.weight'),
    dtype: weightDtype(tensors),
    bos_token_id: ids.bos,
    eos_token_id: ids.eos,
    pad_token_id: ids.pad,
  };
  if (a === 'llama' || a === 'qwen3' || a === 'qwen3moe') config.attention_bias = tensors.has('model.layers.0.self_attn.q_proj.bias');
  if (experts > 0) {
    Object.assign(config, {
      num_experts: experts,
      num_local_experts: experts,
      num_experts_per_tok: m.uint(key('expert_used_count')),
      moe_intermediate_size: m.uint(key('expert_feed_forward_length'), 0) || undefined,
      // llama.cpp renormalizes the chosen experts' weights for Qwen3-MoE and Mixtral, never for Qwen2-MoE.
      norm_topk_prob: m.bool(key('expert_weights_norm'), a !== 'qwen2moe'),
    });
    if (a === 'qwen2moe') config.shared_expert_intermediate_size = m.uint(key('expert_shared_feed_forward_length'));
    if (arch.moe?.modelType.startsWith('qwen')) {
      // Layers without a router keep a dense MLP (Hugging Face's mlp_only_layers); llama.cpp's own files have none.
      const dense = Array.from({ length: config.num_hidden_layers as number }, (_, i) => i).filter((i) => !tensors.has(`model.layers.${i}.mlp.gate.weight`));
      if (dense.length > 0) config.mlp_only_layers = dense;
    }
  }
  return config;
}

/**
 * The dtype the checkpoint "is": 16-bit or 32-bit floats as the matrices are stored, bfloat16 when
 * any is quantized (Keel dequantizes those to bfloat16).
 */
function weightDtype(tensors: ReadonlyMap<string, TensorSource>): string {
  const names = new Set([...tensors.values()].filter((s) => s.tensor.dims.length >= 2).map((s) => s.tensor.type.name));
  if (names.size === 1 && names.has('F32')) return 'float32';
  if ([...names].every((n) => n === 'F16' || n === 'F32')) return 'float16';
  return 'bfloat16';
}
