import { invalidModel } from '../../errors.ts';
import type { GgufArchitecture, TensorSource } from './gguf-architectures.ts';
import { uniformHeadDim, type ConfigBase } from './gguf-config-base.ts';
import { deepseekConfig } from './gguf-deepseek-config.ts';
import { gemmaConfig } from './gguf-gemma-config.ts';
import { phi3Config } from './gguf-phi3-config.ts';
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

/** Small tensors the config is made from, not weights: Llama 3's rope_freqs, Phi-3's LongRoPE factors. */
export interface ConfigTensors {
  ropeFreqs: Float32Array | null;
  ropeFactors: { long: Float32Array; short: Float32Array } | null;
}

/**
 * config.json as transformers would write it for the model a GGUF file holds, from llama.cpp's
 * hyperparameter keys (`ARCH.block_count`, `ARCH.attention.head_count`, ...) and the tensors
 * (vocabulary size from the embedding, tied embeddings when there is no `output.weight`, biases
 * where the file has them); Gemma, Phi-3 and DeepSeek add their own keys (their files).
 */
export function ggufConfig(m: GgufMetadata, arch: GgufArchitecture, tensors: ReadonlyMap<string, TensorSource>, extra: ConfigTensors): Record<string, unknown> {
  const a = arch.name;
  const key = (k: string) => `${a}.${k}`;
  const embedding = tensors.get('model.embed_tokens.weight');
  if (embedding === undefined) throw invalidModel(`${m.source} has no token_embd.weight`);
  const ids = specialTokenIds(m);
  const common: Record<string, unknown> = {
    vocab_size: embedding.shape[0],
    hidden_size: m.uint(key('embedding_length')),
    num_hidden_layers: m.uint(key('block_count')),
    num_attention_heads: m.uint(key('attention.head_count')),
    rms_norm_eps: m.number(key('attention.layer_norm_rms_epsilon')),
    max_position_embeddings: m.uint(key('context_length')),
    tie_word_embeddings: !tensors.has('lm_head.weight'),
    dtype: weightDtype(tensors),
    bos_token_id: ids.bos,
    eos_token_id: ids.eos,
    pad_token_id: ids.pad,
  };
  if (a !== 'phi3' && extra.ropeFactors !== null) throw invalidModel(`${m.source}: rope_factors_long/short are Phi-3's LongRoPE; a GGUF ${a} model does not use them`);
  const base: ConfigBase = { m, arch, tensors, key, common };
  const ownRope = a === 'gemma' || a === 'gemma2' || a === 'gemma3' || a === 'phi3' || a === 'deepseek2';
  if (ownRope && extra.ropeFreqs !== null) throw invalidModel(`${m.source}: rope_freqs.weight scales Llama 3's RoPE; Keel does not read it in a GGUF ${a} model`);
  switch (a) {
    case 'gemma':
    case 'gemma2':
    case 'gemma3':
      return gemmaConfig(base);
    case 'phi3':
      return phi3Config(base, extra.ropeFactors);
    case 'deepseek2':
      return deepseekConfig(base);
    default:
      return llamaLikeConfig(base, extra.ropeFreqs);
  }
}

/** Llama, Mistral, Mixtral and the Qwen families: full-width RoPE over whole heads of one size. */
function llamaLikeConfig({ m, arch, tensors, key, common }: ConfigBase, freqFactors: Float32Array | null): Record<string, unknown> {
  const a = arch.name;
  const hidden = common.hidden_size as number;
  const heads = common.num_attention_heads as number;
  const headDim = uniformHeadDim({ m, arch, tensors, key, common }, hidden / heads);
  const experts = m.uint(key('expert_count'), 0);
  const kind = experts > 0 ? arch.moe : arch.dense;
  if (kind === null) throw invalidModel(`${m.source}: a GGUF ${a} model with ${key('expert_count')} ${experts} is not supported`);
  const config: Record<string, unknown> = {
    architectures: [kind.className],
    model_type: kind.modelType,
    ...common,
    intermediate_size: m.has(key('feed_forward_length')) || experts === 0 ? m.uint(key('feed_forward_length')) : m.uint(key('expert_feed_forward_length')),
    num_key_value_heads: m.uint(key('attention.head_count_kv'), heads),
    head_dim: headDim,
    hidden_act: 'silu',
    rope_parameters: ropeParameters(m, a, headDim, freqFactors),
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
 * any is quantized (what Keel does not repack into int8/int4 it dequantizes to bfloat16).
 */
function weightDtype(tensors: ReadonlyMap<string, TensorSource>): string {
  const names = new Set([...tensors.values()].filter((s) => s.tensor.dims.length >= 2).map((s) => s.tensor.type.name));
  if (names.size === 1 && names.has('F32')) return 'float32';
  if ([...names].every((n) => n === 'F16' || n === 'F32')) return 'float16';
  return 'bfloat16';
}
