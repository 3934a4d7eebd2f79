import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { openCheckpoint } from '../../src/checkpoint/checkpoint.ts';
import { floatToBf16Bits, floatToF16Bits, hostTensorToFloat32 } from '../../src/tensor/host-dtype.ts';
import { f32, str, strings, u32, writeGguf, type GgufTensorSpec, type KvValue } from './gguf-writer.ts';
import { quantizeQ4_0, quantizeQ4_K, quantizeQ6_K, quantizeQ8_0, quantizeQ8_K } from './ggml-quantize.ts';
import { familyWriter, type FamilyOptions } from './gguf-family-writers.ts';

/**
 * A GGUF file made from a Hugging Face checkpoint directory the way llama.cpp's converter
 * (convert_hf_to_gguf.py) makes one, for Keel's round-trip tests: its hyperparameter keys, its
 * tensor names, q/k rows of `llama` models reordered per head for its RoPE, experts stacked,
 * Llama 3 RoPE as rope_freqs.weight, 1-D tensors and routers in F32, and a byte-level BPE
 * tokenizer.json as a `gpt2` vocabulary (tokens, types, merges); Gemma 2/3, Phi-3 and DeepSeek-V2/V3
 * as gguf-family-writers.ts converts them. Written independently of Keel's reader: the two meet
 * only in the file.
 */
export type GgufMatrixType = 'source' | 'F32' | 'F16' | 'BF16' | 'Q8_0' | 'Q4_0' | 'Q4_K' | 'Q6_K' | 'Q8_K';

export interface GgufConversion extends FamilyOptions {
  /** The matrices' type ('source': F32/F16/BF16 as the checkpoint stores them). Rows that do not fill its blocks fall back to F16, as llama.cpp's quantizer falls back. */
  matrixType?: GgufMatrixType;
  /** A matrix's own type by its GGUF name, where it differs from `matrixType` (undefined: `matrixType`), as llama.cpp's K-quant mixes choose. */
  matrixTypeOf?: (ggufName: string) => GgufMatrixType | undefined;
  /** tokenizer.ggml.pre of a byte-level BPE tokenizer.json. */
  pre?: string;
}

const TYPE_IDS: Record<Exclude<GgufMatrixType, 'source'>, number> = { F32: 0, F16: 1, BF16: 30, Q8_0: 8, Q4_0: 2, Q4_K: 12, Q6_K: 14, Q8_K: 15 };
const BLOCK: Record<string, number> = { Q8_0: 32, Q4_0: 32, Q4_K: 256, Q6_K: 256, Q8_K: 256 };
const QUANTIZERS: Record<string, (v: Float32Array) => Uint8Array> = { Q8_0: quantizeQ8_0, Q4_0: quantizeQ4_0, Q4_K: quantizeQ4_K, Q6_K: quantizeQ6_K, Q8_K: quantizeQ8_K };

const ARCH: Record<string, string> = { llama: 'llama', mistral: 'llama', mixtral: 'llama', qwen2: 'qwen2', qwen3: 'qwen3', qwen2_moe: 'qwen2moe', qwen3_moe: 'qwen3moe' };

/** Per-layer Hugging Face suffix -> GGUF name. */
const LAYER_NAMES: [RegExp, string][] = [
  [/^input_layernorm$/, 'attn_norm'],
  [/^post_attention_layernorm$/, 'ffn_norm'],
  [/^self_attn\.q_proj$/, 'attn_q'],
  [/^self_attn\.k_proj$/, 'attn_k'],
  [/^self_attn\.v_proj$/, 'attn_v'],
  [/^self_attn\.o_proj$/, 'attn_output'],
  [/^self_attn\.q_norm$/, 'attn_q_norm'],
  [/^self_attn\.k_norm$/, 'attn_k_norm'],
  [/^mlp\.gate_proj$/, 'ffn_gate'],
  [/^mlp\.up_proj$/, 'ffn_up'],
  [/^mlp\.down_proj$/, 'ffn_down'],
  [/^(mlp|block_sparse_moe)\.gate$/, 'ffn_gate_inp'],
  [/^mlp\.shared_expert_gate$/, 'ffn_gate_inp_shexp'],
  [/^mlp\.shared_expert\.gate_proj$/, 'ffn_gate_shexp'],
  [/^mlp\.shared_expert\.up_proj$/, 'ffn_up_shexp'],
  [/^mlp\.shared_expert\.down_proj$/, 'ffn_down_shexp'],
];
/** Per-expert Hugging Face suffix -> the GGUF stack it joins. */
const EXPERT_NAMES: [RegExp, string][] = [
  [/^(?:mlp\.experts\.(\d+)\.gate_proj|block_sparse_moe\.experts\.(\d+)\.w1)$/, 'ffn_gate_exps'],
  [/^(?:mlp\.experts\.(\d+)\.up_proj|block_sparse_moe\.experts\.(\d+)\.w3)$/, 'ffn_up_exps'],
  [/^(?:mlp\.experts\.(\d+)\.down_proj|block_sparse_moe\.experts\.(\d+)\.w2)$/, 'ffn_down_exps'],
];

interface PendingTensor {
  name: string;
  /** Hugging Face shape (outermost first). */
  shape: number[];
  values: Float32Array;
  sourceDtype: 'f32' | 'f16' | 'bf16';
  /** Routers and 1-D tensors stay F32. */
  keepF32: boolean;
}

export function ggufFromCheckpoint(dir: string, out: string, options: GgufConversion = {}): void {
  const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, any>;
  const family = familyWriter(config, options);
  const arch = family?.arch ?? ARCH[config.model_type];
  if (arch === undefined) throw new Error(`no GGUF architecture for model_type ${config.model_type}`);
  const heads = config.num_attention_heads as number;
  const kvHeads = (config.num_key_value_heads ?? heads) as number;
  const headDim = (config.head_dim ?? config.hidden_size / heads) as number;
  const rope = (config.rope_parameters ?? { ...config.rope_scaling, rope_theta: config.rope_theta }) as Record<string, any>;
  const ckpt = openCheckpoint(dir);
  const pending: PendingTensor[] = [];
  const experts = new Map<string, { shape: number[]; parts: Float32Array[]; sourceDtype: PendingTensor['sourceDtype'] }>();
  try {
    for (const hfName of ckpt.tensorNames.sort()) {
      const host = ckpt.read(hfName);
      let values = hostTensorToFloat32(host);
      const converted = family?.convert(hfName, host.shape, values) ?? null;
      if (converted !== null) {
        for (const t of converted) pending.push({ ...t, sourceDtype: host.dtype, keepF32: t.keepF32 ?? t.shape.length === 1 });
        continue;
      }
      if (family !== null) values = family.transform(hfName, values);
      const add = (name: string, keepF32 = host.shape.length === 1) => pending.push({ name, shape: host.shape, values, sourceDtype: host.dtype, keepF32 });
      if (hfName === 'model.embed_tokens.weight') add('token_embd.weight');
      else if (hfName === 'model.norm.weight') add('output_norm.weight');
      else if (hfName === 'lm_head.weight') add('output.weight');
      else {
        const m = /^model\.layers\.(\d+)\.(.+)\.(weight|bias)$/.exec(hfName);
        if (m === null) throw new Error(`no GGUF name for ${hfName}`);
        const [, layer, suffix, kind] = m;
        const expert = EXPERT_NAMES.find(([re]) => re.test(suffix));
        if (expert !== undefined) {
          const match = expert[0].exec(suffix)!;
          const index = Number(match[1] ?? match[2]);
          const key = `blk.${layer}.${expert[1]}.weight`;
          const stack = experts.get(key) ?? { shape: host.shape, parts: [], sourceDtype: host.dtype };
          stack.parts[index] = values;
          experts.set(key, stack);
          continue;
        }
        const gguf = [...(family?.names ?? []), ...LAYER_NAMES].find(([re]) => re.test(suffix))?.[1];
        if (gguf === undefined) throw new Error(`no GGUF name for ${hfName}`);
        if (arch === 'llama' && (gguf === 'attn_q' || gguf === 'attn_k')) values = pairRows(values, host.shape, gguf === 'attn_q' ? heads : kvHeads);
        const isRouter = gguf === 'ffn_gate_inp' || gguf === 'ffn_gate_inp_shexp';
        if (gguf === 'ffn_gate_inp_shexp') {
          pending.push({ name: `blk.${layer}.${gguf}.${kind}`, shape: [host.shape[1]], values, sourceDtype: host.dtype, keepF32: true });
          continue;
        }
        add(`blk.${layer}.${gguf}.${kind}`, isRouter || host.shape.length === 1);
      }
    }
  } finally {
    ckpt.close();
  }
  for (const [name, stack] of experts) {
    const joined = new Float32Array(stack.parts.reduce((n, p) => n + p.length, 0));
    stack.parts.forEach((p, i) => joined.set(p, i * p.length));
    pending.push({ name, shape: [stack.parts.length, ...stack.shape], values: joined, sourceDtype: stack.sourceDtype, keepF32: false });
  }
  for (const t of family?.extraTensors(config) ?? []) pending.push({ ...t, sourceDtype: 'f32', keepF32: t.keepF32 ?? true });
  const ropeType = rope.rope_type ?? rope.type ?? 'default';
  if (ropeType === 'llama3') pending.push({ name: 'rope_freqs.weight', shape: [headDim / 2], values: llama3Factors(rope, headDim), sourceDtype: 'f32', keepF32: true });
  const tensors: GgufTensorSpec[] = pending.map((t) => encodeTensor(t, options.matrixTypeOf?.(t.name) ?? options.matrixType ?? 'source'));
  const familyKeys = family?.metadata(config, (key) => `${arch}.${key}`) ?? {};
  writeGguf(out, { ...metadata(config, arch, headDim, rope, ropeType), ...familyKeys, ...tokenizerMetadata(dir, config, options.pre ?? 'gpt-2') }, tensors);
}

/** llama.cpp's order of a head's rows: the pair (j, j + d/2) of Hugging Face's rotate-half made adjacent (2j, 2j + 1). */
function pairRows(values: Float32Array, shape: number[], heads: number): Float32Array {
  const rows = shape[0];
  const cols = values.length / rows;
  const d = rows / heads;
  const out = new Float32Array(values.length);
  for (let h = 0; h < heads; h++) {
    for (let j = 0; j < d / 2; j++) {
      for (let s = 0; s < 2; s++) out.set(values.subarray((h * d + s * (d / 2) + j) * cols, (h * d + s * (d / 2) + j + 1) * cols), (h * d + 2 * j + s) * cols);
    }
  }
  return out;
}

function llama3Factors(rope: Record<string, any>, headDim: number): Float32Array {
  const { factor, low_freq_factor: low, high_freq_factor: high, original_max_position_embeddings: original, rope_theta: theta } = rope;
  return Float32Array.from({ length: headDim / 2 }, (_, i) => {
    const wavelength = 2 * Math.PI * theta ** ((2 * i) / headDim);
    if (wavelength < original / high) return 1;
    if (wavelength > original / low) return factor;
    const smooth = (original / wavelength - low) / (high - low);
    return 1 / ((1 - smooth) / factor + smooth);
  });
}

function encodeTensor(t: PendingTensor, matrixType: GgufMatrixType): GgufTensorSpec {
  const dims = [...t.shape].reverse();
  let type: Exclude<GgufMatrixType, 'source'> = t.keepF32 ? 'F32' : matrixType === 'source' ? ({ f32: 'F32', f16: 'F16', bf16: 'BF16' } as const)[t.sourceDtype] : matrixType;
  if (BLOCK[type] !== undefined && dims[0] % BLOCK[type] !== 0) type = 'F16';
  let data: Uint8Array;
  if (type === 'F32') data = new Uint8Array(t.values.slice().buffer);
  else if (type === 'F16' || type === 'BF16') {
    const encode = type === 'F16' ? floatToF16Bits : floatToBf16Bits;
    data = new Uint8Array(Uint16Array.from(t.values, encode).buffer);
  } else data = QUANTIZERS[type](t.values);
  return { name: t.name, dims, typeId: TYPE_IDS[type], data };
}

function metadata(config: Record<string, any>, arch: string, headDim: number, rope: Record<string, any>, ropeType: string): Record<string, KvValue> {
  const k = (key: string) => `${arch}.${key}`;
  const kvs: Record<string, KvValue> = {
    'general.architecture': str(arch),
    'general.name': str('keel test model'),
    [k('context_length')]: u32(config.max_position_embeddings),
    [k('embedding_length')]: u32(config.hidden_size),
    [k('feed_forward_length')]: u32(config.intermediate_size),
    [k('block_count')]: u32(config.num_hidden_layers),
    [k('attention.head_count')]: u32(config.num_attention_heads),
    [k('attention.head_count_kv')]: u32(config.num_key_value_heads ?? config.num_attention_heads),
    [k('attention.key_length')]: u32(headDim),
    [k('attention.value_length')]: u32(headDim),
    [k('attention.layer_norm_rms_epsilon')]: f32(config.rms_norm_eps),
    [k('rope.dimension_count')]: u32(headDim),
    [k('rope.freq_base')]: f32(rope.rope_theta ?? 10000),
  };
  if (ropeType === 'linear') Object.assign(kvs, { [k('rope.scaling.type')]: str('linear'), [k('rope.scaling.factor')]: f32(rope.factor) });
  if (ropeType === 'yarn') {
    Object.assign(kvs, {
      [k('rope.scaling.type')]: str('yarn'),
      [k('rope.scaling.factor')]: f32(rope.factor),
      [k('rope.scaling.original_context_length')]: u32(rope.original_max_position_embeddings),
    });
  }
  const experts = config.num_local_experts ?? config.num_experts;
  if (experts !== undefined) {
    Object.assign(kvs, { [k('expert_count')]: u32(experts), [k('expert_used_count')]: u32(config.num_experts_per_tok) });
    if (config.moe_intermediate_size !== undefined) kvs[k('expert_feed_forward_length')] = u32(config.moe_intermediate_size);
    if (config.shared_expert_intermediate_size !== undefined) kvs[k('expert_shared_feed_forward_length')] = u32(config.shared_expert_intermediate_size);
  }
  return kvs;
}

/** llama.cpp's token types. */
const NORMAL = 1;
const CONTROL = 3;
const USER_DEFINED = 4;

/** The special ids (from config.json) and, when the checkpoint has a byte-level BPE tokenizer.json, its vocabulary. */
function tokenizerMetadata(dir: string, config: Record<string, any>, pre: string): Record<string, KvValue> {
  const first = (v: unknown) => (Array.isArray(v) ? v[0] : v) as number | undefined;
  const kvs: Record<string, KvValue> = {};
  const bos = first(config.bos_token_id);
  const eos = first(config.eos_token_id);
  if (bos != null) kvs['tokenizer.ggml.bos_token_id'] = u32(bos);
  if (eos != null) kvs['tokenizer.ggml.eos_token_id'] = u32(eos);
  if (config.pad_token_id != null) kvs['tokenizer.ggml.padding_token_id'] = u32(config.pad_token_id);
  const jsonPath = join(dir, 'tokenizer.json');
  if (!existsSync(jsonPath)) return kvs;
  const json = JSON.parse(readFileSync(jsonPath, 'utf8'));
  if (json.model?.type !== 'BPE') throw new Error(`${jsonPath}: only BPE tokenizers are converted`);
  const added = new Map<number, { content: string; special: boolean }>((json.added_tokens ?? []).map((t: any) => [t.id, t]));
  const vocab = json.model.vocab as Record<string, number>;
  const size = Math.max(...Object.values(vocab), ...added.keys()) + 1;
  const tokens = new Array<string>(size).fill('');
  const types = new Array<number>(size).fill(NORMAL);
  for (const [token, id] of Object.entries(vocab)) tokens[id] = token;
  for (const [id, t] of added) {
    tokens[id] = t.content;
    types[id] = t.special ? CONTROL : USER_DEFINED;
  }
  const merges = (json.model.merges as (string | [string, string])[]).map((m) => (Array.isArray(m) ? m.join(' ') : m));
  Object.assign(kvs, {
    'tokenizer.ggml.model': str('gpt2'),
    'tokenizer.ggml.pre': str(pre),
    'tokenizer.ggml.tokens': strings(tokens),
    'tokenizer.ggml.token_type': { type: 'array', elementType: 'int32', items: types },
    'tokenizer.ggml.merges': strings(merges),
    'tokenizer.ggml.add_bos_token': { type: 'bool', value: json.post_processor?.type === 'TemplateProcessing' },
  });
  const templatePath = join(dir, 'chat_template.jinja');
  const tokenizerConfigPath = join(dir, 'tokenizer_config.json');
  const template = existsSync(templatePath) ? readFileSync(templatePath, 'utf8') : existsSync(tokenizerConfigPath) ? JSON.parse(readFileSync(tokenizerConfigPath, 'utf8')).chat_template : undefined;
  if (typeof template === 'string') kvs['tokenizer.chat_template'] = str(template);
  return kvs;
}
