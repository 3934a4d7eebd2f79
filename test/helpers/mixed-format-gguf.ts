import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import type { Checkpoint } from '../../src/checkpoint/checkpoint.ts';
import { openModelFiles } from '../../src/checkpoint/model-files.ts';
import { float32Tensor } from '../../src/tensor/host-ops.ts';
import type { HostTensor } from '../../src/tensor/host-tensor.ts';
import { dequantizeWeight, isQuantized } from '../../src/tensor/quantized-weight.ts';
import { ggufFromCheckpoint, type GgufMatrixType } from './gguf-from-checkpoint.ts';
import { writeSafetensors } from './model-safetensors-writer.ts';
import { tempDir } from './model-temp-dir.ts';
import { TINY_LLAMA_CONFIG, writeTinyCheckpoint } from './model-tiny-checkpoint.ts';

/*
 * A random two-layer llama written as a GGUF file whose stacked projections' parts (q/k/v,
 * gate/up) are in different types, as llama.cpp's K-quant mixes write them, beside the same
 * model's exact values as a float32 safetensors directory.
 */

// 256 input columns: whole K-quant super-blocks. An rms_norm_eps a float32 holds exactly, as GGUF stores it.
export const MIXED_CONFIG = { ...TINY_LLAMA_CONFIG, vocab_size: 64, hidden_size: 256, intermediate_size: 256, max_position_embeddings: 256, rms_norm_eps: 2 ** -17 };
export const Q_ROWS = 256;
export const KV_ROWS = 128; // 2 key/value heads of 64

/**
 * Layer 0 as a Q4_K_M file has it (Q4_K q/k beside a Q6_K v; Q6_K down), with a Q8_0 up beside a
 * Q4_K gate; layer 1 with q and v in one format around an F16 k (three matmuls, one 16-bit), and
 * gate/up both Q6_K (one matmul).
 */
export const MIXED_TYPES: Record<string, GgufMatrixType> = {
  'blk.0.attn_q': 'Q4_K',
  'blk.0.attn_k': 'Q4_K',
  'blk.0.attn_v': 'Q6_K',
  'blk.0.attn_output': 'Q4_K',
  'blk.0.ffn_gate': 'Q4_K',
  'blk.0.ffn_up': 'Q8_0',
  'blk.0.ffn_down': 'Q6_K',
  'blk.1.attn_q': 'Q8_0',
  'blk.1.attn_k': 'F16',
  'blk.1.attn_v': 'Q8_0',
  'blk.1.attn_output': 'Q8_0',
  'blk.1.ffn_gate': 'Q6_K',
  'blk.1.ffn_up': 'Q6_K',
  'blk.1.ffn_down': 'Q4_K',
};

/** Token-id prompts (the file has no vocabulary). */
export const MIXED_PROMPTS = [[1, 5, 9, 14, 3, 60, 22], [7, 7, 40, 2, 11], [33, 18, 51, 4, 9, 27, 45, 12, 6]];

/** A prompt past the quantized GEMM's 128 rows, whose linears dequantize to bf16 for cuBLAS on CUDA. */
export const MIXED_LONG_PROMPT = Array.from({ length: 160 }, (_, i) => (i * 37 + 11) % 64);

/** The GGUF file of a random llama in MIXED_TYPES' mix, and its parts' dequantized values as a float32 safetensors directory. */
export function mixedGguf(t: TestContext): { gguf: string; dequantized: string } {
  return ggufBesideDequantized(t, MIXED_CONFIG, (name) => MIXED_TYPES[name] ?? 'F32');
}

/**
 * A random model of `config` (tiny checkpoint writer, seed 7) as a GGUF file with each matrix in
 * `typeOf(its GGUF name without .weight)`, and the file's exact values as a float32 safetensors
 * directory (linear weights and vocabulary matrices dequantized from their repacked codes).
 */
export function ggufBesideDequantized(t: TestContext, config: Record<string, unknown>, typeOf: (ggufName: string) => GgufMatrixType): { gguf: string; dequantized: string } {
  const dir = tempDir(t, 'keel-mixed-');
  const source = join(dir, 'source');
  mkdirSync(source);
  // Values in (-0.35, 0.35): at the default (-1, 1) attention is so sharp that rounding the
  // activations to bf16 moved a 160-token prompt's logits by 12 % of their spread (up to 20 % for
  // a single op's rounding), past the CUDA test's allowance whatever the kernels do; here by under
  // 2 % (test/mixed-format-linears.test.ts checks it on the CPU).
  writeTinyCheckpoint(source, config, { seed: 7, scale: 0.35 });
  const gguf = join(dir, 'model.gguf');
  ggufFromCheckpoint(source, gguf, { matrixType: 'F32', matrixTypeOf: (name) => typeOf(name.replace(/\.weight$/, '')) });
  const dequantized = join(dir, 'dequantized');
  writeDequantized(gguf, dequantized);
  return { gguf, dequantized };
}

/** A safetensors directory with the GGUF model's config and every tensor's exact values (linear weights dequantized to float32). */
function writeDequantized(gguf: string, out: string): void {
  mkdirSync(out);
  const files = openModelFiles(gguf);
  writeFileSync(join(out, 'config.json'), JSON.stringify(files.config().json));
  const ckpt = files.openCheckpoint();
  try {
    writeSafetensors(join(out, 'model.safetensors'), Object.fromEntries(ckpt.tensorNames.map((name) => [name, dequantizedLinear(ckpt, name)])));
  } finally {
    ckpt.close();
  }
}

/** A tensor's exact values: a linear weight's or vocabulary matrix's from its repacked codes, anything else as read. */
function dequantizedLinear(ckpt: Checkpoint, name: string): HostTensor {
  const vocabulary = name === 'model.embed_tokens.weight' || name === 'lm_head.weight';
  if (!vocabulary && !/\.(self_attn|mlp)\.[a-z_]+\.weight$/.test(name)) return ckpt.read(name);
  const w = vocabulary ? ckpt.readVocabulary!(name) : ckpt.readLinear!(name);
  return isQuantized(w) ? float32Tensor(dequantizeWeight(w), [w.rows, w.cols]) : ckpt.read(name);
}

