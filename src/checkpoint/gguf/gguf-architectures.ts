import { invalidModel } from '../../errors.ts';
import type { GgufTensorInfo } from './gguf-file.ts';
import type { GgufMetadata } from './metadata.ts';

/**
 * How a GGUF architecture (`general.architecture`) reads as Hugging Face's: the model_type, and
 * where each Hugging Face tensor's values are among the file's tensors. The names are llama.cpp's
 * (gguf-py's tensor map: `blk.N.attn_q.weight` is `model.layers.N.self_attn.q_proj.weight`).
 */
export interface GgufArchitecture {
  /** The general.architecture value. */
  name: string;
  /** Hugging Face's model_type and architectures entry for a file with and without routed experts. */
  dense: { modelType: string; className: string };
  moe: { modelType: string; className: string } | null;
  /**
   * llama.cpp's converter reorders the rows of each q/k head for its "normal" RoPE (rotated pairs
   * adjacent), where Hugging Face keeps pairs half a head apart; Keel puts them back.
   */
  pairedRope: boolean;
  /**
   * What llama.cpp's converter adds to every norm weight (Hugging Face names ending in
   * `norm.weight`): Gemma's RMSNorm multiplies by 1 + w, and the file holds 1 + w; Keel subtracts it.
   */
  normOffset: number;
  /**
   * Per-layer GGUF tensor (without `blk.N.` and `.weight`/`.bias`) -> Hugging Face name under
   * `model.layers.N.`; a key with its kind (`exp_probs_b.bias`) names the whole Hugging Face suffix.
   */
  layerTensors: Record<string, string>;
  /** Stacked experts ([experts, rows, cols]) -> the per-expert name under `model.layers.N.`, `{e}` for the expert. */
  expertTensors: Record<string, string>;
}

const ATTENTION: Record<string, string> = {
  attn_norm: 'input_layernorm',
  attn_q: 'self_attn.q_proj',
  attn_k: 'self_attn.k_proj',
  attn_v: 'self_attn.v_proj',
  attn_output: 'self_attn.o_proj',
  ffn_norm: 'post_attention_layernorm',
};
const DENSE_MLP: Record<string, string> = { ffn_gate: 'mlp.gate_proj', ffn_up: 'mlp.up_proj', ffn_down: 'mlp.down_proj' };
const QK_NORM: Record<string, string> = { attn_q_norm: 'self_attn.q_norm', attn_k_norm: 'self_attn.k_norm' };
const QWEN_EXPERTS: Record<string, string> = {
  ffn_gate_exps: 'mlp.experts.{e}.gate_proj',
  ffn_up_exps: 'mlp.experts.{e}.up_proj',
  ffn_down_exps: 'mlp.experts.{e}.down_proj',
};
const QWEN_ROUTER: Record<string, string> = { ffn_gate_inp: 'mlp.gate' };

/** Gemma 2 and 3: a norm before and after attention and the MLP; llama.cpp calls the pre-MLP one ffn_norm. */
const GEMMA_LAYER: Record<string, string> = {
  attn_norm: 'input_layernorm',
  attn_q: 'self_attn.q_proj',
  attn_k: 'self_attn.k_proj',
  attn_v: 'self_attn.v_proj',
  attn_output: 'self_attn.o_proj',
  post_attention_norm: 'post_attention_layernorm',
  ffn_norm: 'pre_feedforward_layernorm',
  post_ffw_norm: 'post_feedforward_layernorm',
  ...DENSE_MLP,
};
/** The split halves llama.cpp's converter stores DeepSeek's kv_b_proj as (MLA's absorbed form). */
export const KV_B_HALVES = { keys: 'attn_k_b', values: 'attn_v_b', joined: 'self_attn.kv_b_proj' } as const;

const ARCHITECTURES: readonly GgufArchitecture[] = [
  {
    // Mistral's converter writes `llama` too; Mixtral is `llama` with experts.
    name: 'llama',
    dense: { modelType: 'llama', className: 'LlamaForCausalLM' },
    moe: { modelType: 'mixtral', className: 'MixtralForCausalLM' },
    pairedRope: true,
    normOffset: 0,
    layerTensors: { ...ATTENTION, ...DENSE_MLP, ffn_gate_inp: 'block_sparse_moe.gate' },
    expertTensors: {
      ffn_gate_exps: 'block_sparse_moe.experts.{e}.w1',
      ffn_down_exps: 'block_sparse_moe.experts.{e}.w2',
      ffn_up_exps: 'block_sparse_moe.experts.{e}.w3',
    },
  },
  {
    name: 'qwen2',
    dense: { modelType: 'qwen2', className: 'Qwen2ForCausalLM' },
    moe: null,
    pairedRope: false,
    normOffset: 0,
    layerTensors: { ...ATTENTION, ...DENSE_MLP },
    expertTensors: {},
  },
  {
    name: 'qwen3',
    dense: { modelType: 'qwen3', className: 'Qwen3ForCausalLM' },
    moe: null,
    pairedRope: false,
    normOffset: 0,
    layerTensors: { ...ATTENTION, ...QK_NORM, ...DENSE_MLP },
    expertTensors: {},
  },
  {
    name: 'qwen2moe',
    dense: { modelType: 'qwen2_moe', className: 'Qwen2MoeForCausalLM' },
    moe: { modelType: 'qwen2_moe', className: 'Qwen2MoeForCausalLM' },
    pairedRope: false,
    normOffset: 0,
    layerTensors: {
      ...ATTENTION,
      ...DENSE_MLP,
      ...QWEN_ROUTER,
      ffn_gate_inp_shexp: 'mlp.shared_expert_gate',
      ffn_gate_shexp: 'mlp.shared_expert.gate_proj',
      ffn_up_shexp: 'mlp.shared_expert.up_proj',
      ffn_down_shexp: 'mlp.shared_expert.down_proj',
    },
    expertTensors: QWEN_EXPERTS,
  },
  {
    name: 'qwen3moe',
    dense: { modelType: 'qwen3_moe', className: 'Qwen3MoeForCausalLM' },
    moe: { modelType: 'qwen3_moe', className: 'Qwen3MoeForCausalLM' },
    pairedRope: false,
    normOffset: 0,
    layerTensors: { ...ATTENTION, ...QK_NORM, ...DENSE_MLP, ...QWEN_ROUTER },
    expertTensors: QWEN_EXPERTS,
  },
  {
    // Gemma rotates half a head apart as Hugging Face does (llama.cpp's NeoX RoPE): no reordering.
    // Gemma 1 has Llama's two norms (ffn_norm the pre-MLP one).
    name: 'gemma',
    dense: { modelType: 'gemma', className: 'GemmaForCausalLM' },
    moe: null,
    pairedRope: false,
    normOffset: 1,
    layerTensors: { ...ATTENTION, ...DENSE_MLP },
    expertTensors: {},
  },
  {
    name: 'gemma2',
    dense: { modelType: 'gemma2', className: 'Gemma2ForCausalLM' },
    moe: null,
    pairedRope: false,
    normOffset: 1,
    layerTensors: GEMMA_LAYER,
    expertTensors: {},
  },
  {
    name: 'gemma3',
    dense: { modelType: 'gemma3_text', className: 'Gemma3ForCausalLM' },
    moe: null,
    pairedRope: false,
    normOffset: 1,
    layerTensors: { ...GEMMA_LAYER, ...QK_NORM },
    expertTensors: {},
  },
  {
    // Phi-3's fused tensors keep Hugging Face's layout: q|k|v rows in attn_qkv, gate|up rows in ffn_up.
    name: 'phi3',
    dense: { modelType: 'phi3', className: 'Phi3ForCausalLM' },
    moe: null,
    pairedRope: false,
    normOffset: 0,
    layerTensors: {
      attn_norm: 'input_layernorm',
      attn_qkv: 'self_attn.qkv_proj',
      attn_output: 'self_attn.o_proj',
      ffn_norm: 'post_attention_layernorm',
      ffn_up: 'mlp.gate_up_proj',
      ffn_down: 'mlp.down_proj',
    },
    expertTensors: {},
  },
  {
    // DeepSeek-V2 and -V3 (V3: sigmoid routing with exp_probs_b). Their checkpoints already pair the
    // rotary dims (x[2i], x[2i+1]) as llama.cpp's RoPE does: no reordering. kv_b_proj is attn_kv_b
    // in older files and the two halves of KV_B_HALVES in newer ones.
    name: 'deepseek2',
    dense: { modelType: 'deepseek_v2', className: 'DeepseekV2ForCausalLM' },
    moe: { modelType: 'deepseek_v2', className: 'DeepseekV2ForCausalLM' },
    pairedRope: false,
    normOffset: 0,
    layerTensors: {
      attn_norm: 'input_layernorm',
      attn_q: 'self_attn.q_proj',
      attn_q_a: 'self_attn.q_a_proj',
      attn_q_a_norm: 'self_attn.q_a_layernorm',
      attn_q_b: 'self_attn.q_b_proj',
      attn_kv_a_mqa: 'self_attn.kv_a_proj_with_mqa',
      attn_kv_a_norm: 'self_attn.kv_a_layernorm',
      attn_kv_b: KV_B_HALVES.joined,
      attn_output: 'self_attn.o_proj',
      ffn_norm: 'post_attention_layernorm',
      ...DENSE_MLP,
      ...QWEN_ROUTER,
      'exp_probs_b.bias': 'mlp.gate.e_score_correction_bias',
      ffn_gate_shexp: 'mlp.shared_experts.gate_proj',
      ffn_up_shexp: 'mlp.shared_experts.up_proj',
      ffn_down_shexp: 'mlp.shared_experts.down_proj',
    },
    expertTensors: QWEN_EXPERTS,
  },
];

export function ggufArchitecture(m: GgufMetadata): GgufArchitecture {
  const name = m.string('general.architecture');
  const found = ARCHITECTURES.find((a) => a.name === name);
  if (found === undefined) {
    throw invalidModel(
      `${m.source}: GGUF architecture "${name}" is not supported; Keel reads the GGUF architectures ${ARCHITECTURES.map((a) => a.name).join(', ')} ` +
        '(for other models, use their Hugging Face safetensors release)',
    );
  }
  return found;
}

/** Where a Hugging Face tensor's values are in the file. */
export interface TensorSource {
  tensor: GgufTensorInfo;
  /** Hugging Face's shape (outermost first). */
  shape: number[];
  /** The expert's slice of a stacked tensor, or null for the whole tensor. */
  expert: number | null;
  /** Rows to put back into Hugging Face's order, in heads of rows/heads: the heads, or null. */
  unpairHeads: number | null;
  /** Subtracted from every value as read (the architecture's normOffset for a norm, else 0). */
  offset: number;
  /**
   * kv_b_proj stored as llama.cpp's halves: `tensor` is attn_k_b ([heads, latent, nope]: each
   * head's key rows transposed) and this attn_v_b ([heads, value, latent]); null otherwise.
   */
  valueHalf: GgufTensorInfo | null;
}

const GLOBAL_TENSORS: Record<string, string> = {
  'token_embd.weight': 'model.embed_tokens.weight',
  'output_norm.weight': 'model.norm.weight',
  'output.weight': 'lm_head.weight',
};
/** Consumed by the config (Llama 3 RoPE), not a weight. */
export const ROPE_FREQS = 'rope_freqs.weight';
/** Consumed by the config (Phi-3's LongRoPE factors), not weights. */
export const ROPE_FACTORS = { long: 'rope_factors_long.weight', short: 'rope_factors_short.weight' } as const;
const CONFIG_TENSORS = new Set<string>([ROPE_FREQS, ROPE_FACTORS.long, ROPE_FACTORS.short]);
const LAYER_TENSOR = /^blk\.(\d+)\.([a-z0-9_]+)\.(weight|bias)$/;

/**
 * Every tensor of the file under its Hugging Face name. A tensor this mapping does not know is an
 * error naming it: a file with parts Keel would leave out must not load as if it had none.
 */
export function mapTensors(arch: GgufArchitecture, tensors: ReadonlyMap<string, GgufTensorInfo>, heads: { q: number; kv: number }, source: string): Map<string, TensorSource> {
  const mapped = new Map<string, TensorSource>();
  const hfShape = (t: GgufTensorInfo) => [...t.dims].reverse();
  const add = (name: string, t: GgufTensorInfo, fields: Partial<TensorSource> = {}) =>
    mapped.set(name, { tensor: t, shape: hfShape(t), expert: null, unpairHeads: null, offset: name.endsWith('norm.weight') ? arch.normOffset : 0, valueHalf: null, ...fields });
  for (const t of tensors.values()) {
    if (CONFIG_TENSORS.has(t.name)) continue;
    const global = GLOBAL_TENSORS[t.name];
    if (global !== undefined) {
      add(global, t);
      continue;
    }
    const match = LAYER_TENSOR.exec(t.name);
    const unknown = () => invalidModel(`${source}: tensor ${t.name} is not one Keel knows in a GGUF ${arch.name} model`);
    if (match === null) throw unknown();
    const [, layer, part, kind] = match;
    const prefix = `model.layers.${layer}.`;
    const experts = arch.expertTensors[part];
    if (experts !== undefined) {
      if (t.dims.length !== 3 || kind !== 'weight') throw invalidModel(`${source}: ${t.name} must be a 3-dimensional stack of expert weights (dims [${t.dims.join(', ')}])`);
      for (let e = 0; e < t.dims[2]; e++) {
        add(`${prefix}${experts.replace('{e}', String(e))}.weight`, t, { shape: [t.dims[1], t.dims[0]], expert: e });
      }
      continue;
    }
    if (arch.name === 'deepseek2' && (part === KV_B_HALVES.keys || part === KV_B_HALVES.values) && kind === 'weight') {
      if (part === KV_B_HALVES.keys) addKvB(t, tensors, `${prefix}${KV_B_HALVES.joined}.weight`, layer, add, source);
      else if (!tensors.has(`blk.${layer}.${KV_B_HALVES.keys}.weight`)) throw invalidModel(`${source}: ${t.name} has no blk.${layer}.${KV_B_HALVES.keys}.weight beside it`);
      continue;
    }
    const whole = arch.layerTensors[`${part}.${kind}`];
    const hf = arch.layerTensors[part];
    if (whole === undefined && hf === undefined) throw unknown();
    const unpairHeads = !arch.pairedRope ? null : part === 'attn_q' ? heads.q : part === 'attn_k' ? heads.kv : null;
    // llama.cpp keeps Qwen2-MoE's shared-expert gate as a vector; Hugging Face as a [1, hidden] matrix.
    const shape = part === 'ffn_gate_inp_shexp' && t.dims.length === 1 ? [1, t.dims[0]] : hfShape(t);
    add(whole !== undefined ? `${prefix}${whole}` : `${prefix}${hf}.${kind}`, t, { shape, unpairHeads });
  }
  return mapped;
}

/**
 * DeepSeek's kv_b_proj ([heads · (nope + value), latent]) from llama.cpp's halves: attn_k_b with
 * ggml dims [nope, latent, heads] and attn_v_b with [latent, value, heads].
 */
function addKvB(
  keys: GgufTensorInfo,
  tensors: ReadonlyMap<string, GgufTensorInfo>,
  name: string,
  layer: string,
  add: (name: string, t: GgufTensorInfo, fields: Partial<TensorSource>) => void,
  source: string,
): void {
  const values = tensors.get(`blk.${layer}.${KV_B_HALVES.values}.weight`);
  if (values === undefined) throw invalidModel(`${source}: ${keys.name} has no blk.${layer}.${KV_B_HALVES.values}.weight beside it`);
  const [nope, latent, heads] = keys.dims;
  const [latentV, value, headsV] = values.dims;
  if (keys.dims.length !== 3 || values.dims.length !== 3 || latentV !== latent || headsV !== heads) {
    throw invalidModel(`${source}: ${keys.name} (dims [${keys.dims.join(', ')}]) and ${values.name} (dims [${values.dims.join(', ')}]) are not the halves of one kv_b_proj`);
  }
  add(name, keys, { shape: [heads * (nope + value), latent], valueHalf: values });
}
