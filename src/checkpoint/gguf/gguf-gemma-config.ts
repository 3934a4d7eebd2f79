import { invalidModel } from '../../errors.ts';
import { uniformHeadDim, type ConfigBase } from './gguf-config-base.ts';
import { ropeParameters } from './gguf-rope.ts';

/** llama.cpp's defaults where a Gemma file leaves a key out (its llama-hparams and Gemma loaders). */
const DEFAULTS = {
  gemma2: { window: 4096, pattern: 2, attnSoftcap: 50, finalSoftcap: 30, largeLayers: 46 },
  gemma3: { window: 0, pattern: 6, attnSoftcap: null, finalSoftcap: null, largeLayers: 62 },
} as const;
const LOCAL_THETA = 10000;

/**
 * Gemma 1 from llama.cpp's keys: one RoPE, scores scaled by head_dim^-0.5, no window, no soft-caps
 * (gelu-tanh, norms and the √hidden embedding scale are the family's, as for Gemma 2 and 3).
 */
function gemma1Config(base: ConfigBase): Record<string, unknown> {
  const { m, arch, key, common } = base;
  const heads = common.num_attention_heads as number;
  const headDim = uniformHeadDim(base, (common.hidden_size as number) / heads);
  return {
    architectures: [arch.dense.className],
    model_type: arch.dense.modelType,
    ...common,
    intermediate_size: m.uint(key('feed_forward_length')),
    num_key_value_heads: m.uint(key('attention.head_count_kv'), heads),
    head_dim: headDim,
    hidden_act: 'gelu_pytorch_tanh',
    attention_bias: base.tensors.has('model.layers.0.self_attn.q_proj.bias'),
    rope_parameters: ropeParameters(m, arch.name, headDim, null),
  };
}

/**
 * Gemma 1 (gemma1Config), Gemma 2 and Gemma 3 (text) from llama.cpp's keys: the soft-caps, the sliding window and which
 * layers use it (`attention.sliding_window_pattern`: every n-th layer global, or a flag per
 * layer), Gemma 3's own RoPE for the sliding layers (`rope.freq_base_swa`, never scaled).
 * The converter does not write query_pre_attn_scalar: llama.cpp scales scores by head_dim^-0.5,
 * or (hidden / heads)^-0.5 for the 27B models it knows by their layer count, as the released
 * configs set it; `attention.scale`, when a file has it, is the scale itself.
 */
export function gemmaConfig(base: ConfigBase): Record<string, unknown> {
  const { m, arch, key, common } = base;
  if (arch.name === 'gemma') return gemma1Config(base);
  const a = arch.name as 'gemma2' | 'gemma3';
  const defaults = DEFAULTS[a];
  const hidden = common.hidden_size as number;
  const heads = common.num_attention_heads as number;
  const layers = common.num_hidden_layers as number;
  const headDim = uniformHeadDim(base, hidden / heads);
  const window = m.uint(key('attention.sliding_window'), defaults.window);
  const global = ropeParameters(m, a, headDim, null);
  const localTheta = m.number(key('rope.freq_base_swa'), a === 'gemma2' ? (global.rope_theta as number) : LOCAL_THETA);
  let rope: Record<string, unknown>;
  if (a === 'gemma2') {
    if (localTheta !== global.rope_theta) throw invalidModel(`${m.source}: ${key('rope.freq_base_swa')} ${localTheta} differs from ${key('rope.freq_base')}; Gemma 2 has one RoPE for every layer`);
    rope = global;
  } else {
    rope = { full_attention: global, sliding_attention: { rope_type: 'default', rope_theta: localTheta } };
  }
  const scale = m.number(key('attention.scale'), 0);
  const queryPreAttnScalar = scale > 0 ? 1 / (scale * scale) : layers === defaults.largeLayers ? hidden / heads : headDim;
  return {
    architectures: [arch.dense.className],
    model_type: arch.dense.modelType,
    ...common,
    intermediate_size: m.uint(key('feed_forward_length')),
    num_key_value_heads: m.uint(key('attention.head_count_kv'), heads),
    head_dim: headDim,
    hidden_activation: 'gelu_pytorch_tanh',
    query_pre_attn_scalar: queryPreAttnScalar,
    sliding_window: window > 0 ? window : null,
    layer_types: slidingLayers(base, layers, window > 0, defaults.pattern).map((s) => (s ? 'sliding_attention' : 'full_attention')),
    attn_logit_softcapping: m.number(key('attn_logit_softcapping'), defaults.attnSoftcap ?? 0) || null,
    final_logit_softcapping: m.number(key('final_logit_softcapping'), defaults.finalSoftcap ?? 0) || null,
    attention_bias: base.tensors.has('model.layers.0.self_attn.q_proj.bias'),
    rope_parameters: rope,
  };
}

/** llama.cpp's rule: a flag per layer, or with a period n every layer but each n-th slides (n = 0: all of them). */
function slidingLayers({ m, key }: ConfigBase, layers: number, windowed: boolean, defaultPattern: number): boolean[] {
  if (!windowed) return new Array<boolean>(layers).fill(false);
  const patternKey = key('attention.sliding_window_pattern');
  const raw = m.raw(patternKey);
  if (typeof raw === 'object') {
    const flags = m.bools(patternKey);
    if (flags.length !== layers) throw invalidModel(`${m.source}: ${patternKey} has ${flags.length} flags for ${layers} layers`);
    return flags;
  }
  const period = m.uint(patternKey, defaultPattern);
  return Array.from({ length: layers }, (_, i) => period === 0 || i % period < period - 1);
}
