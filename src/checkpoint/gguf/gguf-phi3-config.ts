import { invalidModel } from '../../errors.ts';
import type { ConfigBase } from './gguf-config-base.ts';

const DEFAULT_THETA = 10000;

/**
 * Phi-3 from llama.cpp's keys: a rotary width that may be part of the head
 * (`rope.dimension_count`), the sliding window (0: none), and LongRoPE as the converter stores it:
 * the per-frequency factors as the tensors rope_factors_long/short, the original context as
 * `rope.scaling.original_context_length` and the attention factor as `rope.scaling.attn_factor`.
 */
export function phi3Config({ m, arch, key, common }: ConfigBase, factors: { long: Float32Array; short: Float32Array } | null): Record<string, unknown> {
  const hidden = common.hidden_size as number;
  const heads = common.num_attention_heads as number;
  const headDim = hidden / heads;
  if (m.uint(key('attention.key_length'), headDim) !== headDim || m.uint(key('attention.value_length'), headDim) !== headDim) {
    throw invalidModel(`${m.source}: Phi-3's heads are hidden / heads = ${headDim} wide; ${key('attention.key_length')}/value_length say otherwise`);
  }
  const ropeDim = m.uint(key('rope.dimension_count'), headDim);
  const theta = m.number(key('rope.freq_base'), DEFAULT_THETA);
  const scaling = m.string(key('rope.scaling.type'), factors === null ? 'none' : 'longrope');
  const window = m.uint(key('attention.sliding_window'), 0);
  const config: Record<string, unknown> = {
    architectures: [arch.dense.className],
    model_type: arch.dense.modelType,
    ...common,
    intermediate_size: m.uint(key('feed_forward_length')),
    num_key_value_heads: m.uint(key('attention.head_count_kv'), heads),
    hidden_act: 'silu',
    sliding_window: window > 0 ? window : null,
    rope_parameters: { rope_type: 'default', rope_theta: theta, partial_rotary_factor: ropeDim / headDim },
  };
  if (scaling === 'none' && factors === null) return config;
  if (scaling !== 'longrope' || factors === null) {
    const what = factors === null ? `"${scaling}" without rope_factors_long/short` : `"${scaling}"`;
    throw invalidModel(`${m.source}: Phi-3 RoPE scaling ${what} is not supported (Keel reads LongRoPE as rope_factors_long/short)`);
  }
  if (factors.long.length !== ropeDim / 2 || factors.short.length !== ropeDim / 2) {
    throw invalidModel(`${m.source}: rope_factors_long/short have ${factors.long.length}/${factors.short.length} values; a rotary width of ${ropeDim} needs ${ropeDim / 2}`);
  }
  const original = m.uint(key('rope.scaling.original_context_length'));
  const rope: Record<string, unknown> = {
    rope_type: 'longrope',
    rope_theta: theta,
    partial_rotary_factor: ropeDim / headDim,
    original_max_position_embeddings: original,
    long_factor: [...factors.long],
    short_factor: [...factors.short],
  };
  if (m.has(key('rope.scaling.attn_factor'))) rope.attention_factor = m.number(key('rope.scaling.attn_factor'));
  // transformers reads LongRoPE's original context from the top level first.
  return { ...config, original_max_position_embeddings: original, rope_parameters: rope };
}
