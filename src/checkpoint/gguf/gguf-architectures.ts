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
  /** Per-layer GGUF tensor (without `blk.N.` and `.weight`/`.bias`) -> Hugging Face name under `model.layers.N.`. */
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

const ARCHITECTURES: readonly GgufArchitecture[] = [
  {
    // Mistral's converter writes `llama` too; Mixtral is `llama` with experts.
    name: 'llama',
    dense: { modelType: 'llama', className: 'LlamaForCausalLM' },
    moe: { modelType: 'mixtral', className: 'MixtralForCausalLM' },
    pairedRope: true,
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
    layerTensors: { ...ATTENTION, ...DENSE_MLP },
    expertTensors: {},
  },
  {
    name: 'qwen3',
    dense: { modelType: 'qwen3', className: 'Qwen3ForCausalLM' },
    moe: null,
    pairedRope: false,
    layerTensors: { ...ATTENTION, ...QK_NORM, ...DENSE_MLP },
    expertTensors: {},
  },
  {
    name: 'qwen2moe',
    dense: { modelType: 'qwen2_moe', className: 'Qwen2MoeForCausalLM' },
    moe: { modelType: 'qwen2_moe', className: 'Qwen2MoeForCausalLM' },
    pairedRope: false,
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
    layerTensors: { ...ATTENTION, ...QK_NORM, ...DENSE_MLP, ...QWEN_ROUTER },
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
}

const GLOBAL_TENSORS: Record<string, string> = {
  'token_embd.weight': 'model.embed_tokens.weight',
  'output_norm.weight': 'model.norm.weight',
  'output.weight': 'lm_head.weight',
};
/** Consumed by the config (Llama 3 RoPE), not a weight. */
export const ROPE_FREQS = 'rope_freqs.weight';
const LAYER_TENSOR = /^blk\.(\d+)\.([a-z0-9_]+)\.(weight|bias)$/;

/**
 * Every tensor of the file under its Hugging Face name. A tensor this mapping does not know is an
 * error naming it: a file with parts Keel would leave out must not load as if it had none.
 */
export function mapTensors(arch: GgufArchitecture, tensors: ReadonlyMap<string, GgufTensorInfo>, heads: { q: number; kv: number }, source: string): Map<string, TensorSource> {
  const mapped = new Map<string, TensorSource>();
  const hfShape = (t: GgufTensorInfo) => [...t.dims].reverse();
  for (const t of tensors.values()) {
    if (t.name === ROPE_FREQS) continue;
    const global = GLOBAL_TENSORS[t.name];
    if (global !== undefined) {
      mapped.set(global, { tensor: t, shape: hfShape(t), expert: null, unpairHeads: null });
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
        mapped.set(`${prefix}${experts.replace('{e}', String(e))}.weight`, { tensor: t, shape: [t.dims[1], t.dims[0]], expert: e, unpairHeads: null });
      }
      continue;
    }
    const hf = arch.layerTensors[part];
    if (hf === undefined) throw unknown();
    const unpairHeads = !arch.pairedRope ? null : part === 'attn_q' ? heads.q : part === 'attn_k' ? heads.kv : null;
    // llama.cpp keeps Qwen2-MoE's shared-expert gate as a vector; Hugging Face as a [1, hidden] matrix.
    const shape = part === 'ffn_gate_inp_shexp' && t.dims.length === 1 ? [1, t.dims[0]] : hfShape(t);
    mapped.set(`${prefix}${hf}.${kind}`, { tensor: t, shape, expert: null, unpairHeads });
  }
  return mapped;
}
