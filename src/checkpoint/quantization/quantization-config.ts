import { invalidModel } from '../../errors.ts';
import { AQLM_GROUP, type AqlmFormat } from '../../tensor/quantized-weight.ts';

/*
 * config.json's `quantization_config`, as transformers and vLLM read it, for the weight formats
 * Keel loads. Which layers are quantized is read from the tensors themselves (a layer in an
 * ignore list or `modules_to_not_convert` has a plain 16-bit `.weight`), so the lists need no
 * parsing; what is parsed here is how to decode the layers that are.
 */

/** GPTQ (AutoGPTQ / GPTQModel): qweight, qzeros, scales and g_idx per layer. */
export interface GptqConfig {
  method: 'gptq';
  bits: 4 | 8;
  /** Input columns per scale group; null for one group per row (`group_size: -1`). */
  groupSize: number | null;
  /** `gptq` (v1) stores each zero point minus one; `gptq_v2` stores it as is. */
  zerosMinusOne: boolean;
}

/** AutoAWQ's GEMM layout: qweight, qzeros and scales per layer, packed along the output columns. */
export interface AwqConfig {
  method: 'awq';
  groupSize: number | null;
}

/** compressed-tensors' weight arguments for one config group. */
export interface CompressedTensorsScheme {
  /** Module names, `re:` regular expressions, or the class name `Linear` (every linear layer). */
  targets: string[];
  type: 'int' | 'float';
  bits: number;
  strategy: 'tensor' | 'channel' | 'group' | 'block';
  groupSize: number | null;
  /** `block` strategy: [rows, columns] of a scale block. */
  blockStructure: [number, number] | null;
  symmetric: boolean;
}

/** compressed-tensors (llm-compressor): `pack-quantized` integers or `float-quantized` FP8. */
export interface CompressedTensorsConfig {
  method: 'compressed-tensors';
  format: 'pack-quantized' | 'float-quantized';
  schemes: CompressedTensorsScheme[];
}

/** `quant_method: fp8` (transformers' FineGrainedFP8, DeepSeek-V3): e4m3 weights, scalar or block scales. */
export interface Fp8Config {
  method: 'fp8';
  /** [rows, columns] of a `weight_scale_inv` block; null: one `weight_scale` per tensor. */
  blockSize: [number, number] | null;
}

/**
 * bitsandbytes (transformers' BitsAndBytesConfig): 4-bit NF4/FP4 blocks with their quant_state, or
 * LLM.int8() weights (int8 `weight` and `SCB` row absmax).
 */
export interface BitsAndBytesConfig {
  method: 'bitsandbytes';
  bits: 4 | 8;
  /** 4-bit: the data type of the codes. */
  quantType: 'nf4' | 'fp4';
  /** 8-bit: LLM.int8()'s outlier threshold (`llm_int8_threshold`; 0: no outlier columns). */
  threshold: number;
}

/**
 * `quant_method: mxfp4` (gpt-oss): routed MoE experts stored as MXFP4 `*_blocks` and `*_scales`
 * (src/tensor/mxfp4.ts); every other tensor, named in `modules_to_not_convert`, is 16-bit.
 */
export interface Mxfp4Config {
  method: 'mxfp4';
}

/**
 * AQLM (transformers' AqlmConfig): per layer `codes`, `codebooks` and `scales`, vectors of 8 input
 * columns (in_group_size 8) of one output row (out_group_size 1), coded by one 16-bit or two
 * 8-bit codebooks.
 */
export interface AqlmConfig {
  method: 'aqlm';
  format: AqlmFormat;
}

export type CheckpointQuantization = GptqConfig | AwqConfig | CompressedTensorsConfig | Fp8Config | BitsAndBytesConfig | Mxfp4Config | AqlmConfig;

const SUPPORTED = 'gptq, awq, compressed-tensors (pack-quantized, float-quantized), fp8, mxfp4, bitsandbytes (4-bit nf4/fp4, 8-bit LLM.int8()) and aqlm (1x16, 2x8)';

/** The checkpoint's quantization, or null when config.json has no `quantization_config`. */
export function parseQuantizationConfig(json: Record<string, unknown>, source: string): CheckpointQuantization | null {
  const raw = json.quantization_config;
  if (raw == null) return null;
  const where = `${source} quantization_config`;
  if (typeof raw !== 'object' || Array.isArray(raw)) throw invalidModel(`${where} must be an object`);
  const q = new Fields(raw as Record<string, unknown>, where);
  const method = q.raw('quant_method');
  switch (method) {
    case 'gptq':
      return parseGptq(q);
    case 'awq':
      return parseAwq(q);
    case 'compressed-tensors':
      // A sparse-only checkpoint (sparsity_config, no config_groups) holds 16-bit weights: its sparsity is read by sparsity-config.ts.
      return isEmpty(q.raw('config_groups')) && !isEmpty(q.raw('sparsity_config')) ? null : parseCompressedTensors(q);
    case 'fp8':
      return parseFp8(q);
    case 'bitsandbytes':
      return parseBitsAndBytes(q);
    case 'mxfp4':
      return { method: 'mxfp4' };
    case 'aqlm':
      return parseAqlm(q);
    default:
      throw invalidModel(`${where}: quant_method ${JSON.stringify(method)} is not supported; Keel reads ${SUPPORTED} checkpoints, or quantizes 16-bit ones at load (--quantization fp8|int8|int4|mxfp4|nf4|llm-int8)`);
  }
}

function parseGptq(q: Fields): GptqConfig {
  const bits = q.int('bits');
  if (bits !== 4 && bits !== 8) throw invalidModel(`${q.source}: GPTQ with ${bits} bits is not supported (Keel reads 4 and 8)`);
  const format = q.string('checkpoint_format', 'gptq');
  if (format !== 'gptq' && format !== 'gptq_v2') throw invalidModel(`${q.source}: GPTQ checkpoint_format "${format}" is not supported (Keel reads gptq and gptq_v2)`);
  return { method: 'gptq', bits, groupSize: groupSize(q), zerosMinusOne: format === 'gptq' };
}

function parseAwq(q: Fields): AwqConfig {
  const bits = q.int('bits', q.int('w_bit', 4));
  if (bits !== 4) throw invalidModel(`${q.source}: AWQ with ${bits} bits is not supported (Keel reads 4)`);
  const version = q.string('version', 'gemm').toLowerCase();
  if (version !== 'gemm') throw invalidModel(`${q.source}: AWQ version "${version}" is not supported (Keel reads the GEMM layout)`);
  if (q.raw('zero_point') === false) throw invalidModel(`${q.source}: AWQ without zero points is not supported`);
  return { method: 'awq', groupSize: groupSize(q, q.raw('q_group_size') != null ? 'q_group_size' : 'group_size') };
}

function groupSize(q: Fields, key = 'group_size'): number | null {
  const size = q.int(key, -1);
  if (size === -1) return null;
  if (size < 1) throw invalidModel(`${q.source}: ${key} must be a positive integer or -1 (got ${size})`);
  return size;
}

function parseCompressedTensors(q: Fields): CompressedTensorsConfig {
  const format = q.string('format', '');
  if (format !== 'pack-quantized' && format !== 'float-quantized') {
    throw invalidModel(`${q.source}: compressed-tensors format "${format}" is not supported (Keel reads pack-quantized and float-quantized)`);
  }
  if (!isEmpty(q.raw('sparsity_config'))) {
    throw invalidModel(`${q.source}: compressed-tensors sparsity_config beside quantized config_groups is not supported (Keel runs 2:4 sparse 16-bit checkpoints: docs/sparsity.md)`);
  }
  const status = q.string('quantization_status', 'compressed');
  if (status !== 'compressed') throw invalidModel(`${q.source}: compressed-tensors quantization_status "${status}" is not supported (Keel reads compressed checkpoints)`);
  const groups = q.raw('config_groups');
  if (typeof groups !== 'object' || groups === null || Object.keys(groups).length === 0) throw invalidModel(`${q.source}: config_groups must be a non-empty object`);
  const schemes = Object.entries(groups as Record<string, unknown>).map(([name, group]) => {
    const g = new Fields(group as Record<string, unknown>, `${q.source} config_groups.${name}`);
    const groupFormat = g.string('format', format);
    if (groupFormat !== format) throw invalidModel(`${g.source}: format "${groupFormat}" differs from the checkpoint's "${format}" (Keel reads one format per checkpoint)`);
    return parseScheme(g, format);
  });
  return { method: 'compressed-tensors', format, schemes };
}

function isEmpty(value: unknown): boolean {
  return value == null || (typeof value === 'object' && Object.keys(value).length === 0);
}

function parseScheme(g: Fields, format: CompressedTensorsConfig['format']): CompressedTensorsScheme {
  const targets = g.raw('targets');
  if (!Array.isArray(targets) || !targets.every((t) => typeof t === 'string')) throw invalidModel(`${g.source}: targets must be a list of strings`);
  const w = new Fields(g.raw('weights') as Record<string, unknown>, `${g.source}.weights`);
  if (g.raw('weights') == null) throw invalidModel(`${g.source}: no weights scheme (activation-only quantization is not supported)`);
  const type = w.string('type', 'int');
  const bits = w.int('num_bits');
  const expected = format === 'pack-quantized' ? 'int' : 'float';
  if (type !== expected) throw invalidModel(`${w.source}: type "${type}" in a ${format} checkpoint (expected ${expected})`);
  if (type === 'int' && bits !== 4 && bits !== 8) throw invalidModel(`${w.source}: ${bits}-bit integers are not supported (Keel reads 4 and 8)`);
  if (type === 'float' && bits !== 8) throw invalidModel(`${w.source}: ${bits}-bit floats are not supported (Keel reads FP8 e4m3)`);
  const strategy = w.string('strategy', 'tensor');
  const strategies = type === 'int' ? ['channel', 'group'] : ['tensor', 'channel', 'block'];
  if (!strategies.includes(strategy)) throw invalidModel(`${w.source}: strategy "${strategy}" is not supported for ${type} weights (Keel reads ${strategies.join(', ')})`);
  const block = w.raw('block_structure');
  let blockStructure: [number, number] | null = null;
  if (strategy === 'block') {
    if (!Array.isArray(block) || block.length !== 2 || !block.every((d) => Number.isInteger(d) && d > 0)) throw invalidModel(`${w.source}: block_structure must be [rows, columns]`);
    blockStructure = [block[0], block[1]];
  }
  const dynamic = w.raw('dynamic');
  if (dynamic === true || dynamic === 'local') throw invalidModel(`${w.source}: dynamic weight scales are not supported`);
  return {
    targets: targets as string[],
    type,
    bits,
    strategy: strategy as CompressedTensorsScheme['strategy'],
    groupSize: strategy === 'group' ? w.int('group_size') : null,
    blockStructure,
    symmetric: w.raw('symmetric') !== false,
  };
}

function parseFp8(q: Fields): Fp8Config {
  const fmt = q.string('fmt', 'e4m3');
  if (fmt !== 'e4m3') throw invalidModel(`${q.source}: fp8 fmt "${fmt}" is not supported (Keel reads e4m3)`);
  const block = q.raw('weight_block_size');
  if (block == null) return { method: 'fp8', blockSize: null };
  if (!Array.isArray(block) || block.length !== 2 || !block.every((d) => Number.isInteger(d) && d > 0)) {
    throw invalidModel(`${q.source}: weight_block_size must be [rows, columns] (got ${JSON.stringify(block)})`);
  }
  return { method: 'fp8', blockSize: [block[0], block[1]] };
}

function parseBitsAndBytes(q: Fields): BitsAndBytesConfig {
  const four = q.raw('load_in_4bit') === true || q.raw('_load_in_4bit') === true;
  const eight = q.raw('load_in_8bit') === true || q.raw('_load_in_8bit') === true;
  if (four === eight) throw invalidModel(`${q.source}: bitsandbytes needs exactly one of load_in_4bit and load_in_8bit true`);
  if (eight) {
    if (q.raw('llm_int8_has_fp16_weight') === true) {
      throw invalidModel(`${q.source}: llm_int8_has_fp16_weight true (16-bit weights kept for training) is not supported; Keel reads int8 inference checkpoints (weight int8 + SCB)`);
    }
    const threshold = q.raw('llm_int8_threshold') ?? 6.0;
    if (typeof threshold !== 'number' || !(threshold >= 0)) throw invalidModel(`${q.source}: llm_int8_threshold must be a number >= 0 (got ${JSON.stringify(threshold)})`);
    return { method: 'bitsandbytes', bits: 8, quantType: 'nf4', threshold };
  }
  const quantType = q.string('bnb_4bit_quant_type', 'fp4');
  if (quantType !== 'nf4' && quantType !== 'fp4') throw invalidModel(`${q.source}: bnb_4bit_quant_type "${quantType}" is not supported (Keel reads nf4 and fp4)`);
  const storage = q.string('bnb_4bit_quant_storage', 'uint8');
  if (storage !== 'uint8') throw invalidModel(`${q.source}: bnb_4bit_quant_storage "${storage}" is not supported (Keel reads uint8, two codes a byte)`);
  // bnb_4bit_compute_dtype is not needed: Keel multiplies in its own activation dtype (bf16 on CUDA).
  return { method: 'bitsandbytes', bits: 4, quantType, threshold: 0 };
}

function parseAqlm(q: Fields): AqlmConfig {
  const outGroup = q.int('out_group_size', 1);
  if (outGroup !== 1) throw invalidModel(`${q.source}: AQLM out_group_size ${outGroup} (codebook vectors spanning ${outGroup} output rows) is not supported; Keel reads out_group_size 1`);
  const inGroup = q.int('in_group_size', 8);
  if (inGroup !== AQLM_GROUP) throw invalidModel(`${q.source}: AQLM in_group_size ${inGroup} is not supported; Keel reads vectors of ${AQLM_GROUP} input columns (in_group_size 8)`);
  const codebooks = q.int('num_codebooks', 1);
  const bits = q.int('nbits_per_codebook', 16);
  const format = `aqlm-${codebooks}x${bits}`;
  if (format !== 'aqlm-1x16' && format !== 'aqlm-2x8') {
    throw invalidModel(`${q.source}: AQLM with ${codebooks} codebook(s) of ${bits} bits (${codebooks}x${bits}) is not supported; Keel reads 1x16 and 2x8`);
  }
  return { method: 'aqlm', format };
}

class Fields {
  readonly source: string;
  private readonly json: Record<string, unknown>;

  constructor(json: Record<string, unknown>, source: string) {
    this.json = json ?? {};
    this.source = source;
  }

  raw(key: string): unknown {
    return this.json[key];
  }

  int(key: string, fallback?: number): number {
    const v = this.json[key] ?? fallback;
    if (v === undefined) throw invalidModel(`${this.source}: required key "${key}" is missing`);
    if (typeof v !== 'number' || !Number.isSafeInteger(v)) throw invalidModel(`${this.source}: "${key}" must be an integer (got ${JSON.stringify(v)})`);
    return v;
  }

  string(key: string, fallback: string): string {
    const v = this.json[key] ?? fallback;
    if (typeof v !== 'string') throw invalidModel(`${this.source}: "${key}" must be a string (got ${JSON.stringify(v)})`);
    return v;
  }
}
