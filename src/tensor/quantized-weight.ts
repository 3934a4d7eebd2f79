/*
 * Keel's layouts of quantized linear weights on the host (docs/quantization.md). Every checkpoint
 * format (GPTQ, AWQ, compressed-tensors, FP8) is repacked into one of these at load, and weights
 * quantized at load are written in them directly, so a backend has one layout per code width.
 *
 * A weight W [rows, cols] (a linear layer's [out, in]) is stored row by row: each output row's
 * codes are contiguous, packed along the input dimension, which is what a GEMV streams and what a
 * mixed-input GEMM tile loads. Columns are cut into groups of `groupSize` (the last may be
 * shorter; groupSize = cols is one scale per row), and each (row, group) has a float32 scale and,
 * for asymmetric integer formats, an integer zero code; int4 may also carry a float32 min per
 * (row, group) (GGUF's Q4_K and Q4_1: x = d·q − m, where m / d is no integer code):
 *
 *   W[row, perm[col]] = (code(row, col) - zero(row, group)) * scale(row, group) - min(row, group)   (integers)
 *   W[row, perm[col]] = fp8e4m3(code(row, col)) * scale(row, group)               (fp8)
 *   W[row, perm[col]] = TABLE[code(row, col)] * scale(row, group)                  (nf4, fp4)
 *
 * with group = floor(col / groupSize), each value rounded to float32 once (the integer one in
 * float64 first, where (code - zero) · scale is exact, so an int4 value with a min is rounded once
 * as ggml's fround(fround(d·q) − m) is: d·q is exact in float32 for its fp16 d and 6-bit scales). `perm` (act-order
 * checkpoints) lists the input column each stored column multiplies; null is the identity.
 *
 * nf4 and fp4 are bitsandbytes' 4-bit data types: 4-bit codes packed as int4's are, each an index
 * into a table of 16 values in [-1, 1] (NF4_VALUES, FP4_VALUES), scaled by the block's absmax.
 *
 * aqlm-1x16 and aqlm-2x8 are AQLM's additive vector codes (src/tensor/aqlm.ts): each group of 8
 * consecutive columns of a row is one 16-bit word of codes, either one index into a codebook of
 * 65536 vectors of 8 values or two indices into two codebooks of 256 (low byte the first), and
 *
 *   W[row, 8g + j] = (Σ_c codebooks[part(row), c, code_c(row, g), j]) * scale(row)
 *
 * the sum over the codebooks rounded to float32 in codebook order, then the product once. Each
 * stacked part (q/k/v) keeps its own codebooks; one scale per row (groupSize = cols), no zeros,
 * no permutation.
 */

import { invalidModel } from '../errors.ts';
import type { HostTensor } from './host-tensor.ts';
import type { Sparse24Weight } from './sparse24.ts';

export type QuantizedFormat = 'int4' | 'int8' | 'fp8-e4m3' | 'nf4' | 'fp4' | AqlmFormat;

/** AQLM's two layouts Keel runs: codebooks × bits per code. */
export type AqlmFormat = 'aqlm-1x16' | 'aqlm-2x8';

/** An AQLM weight's codebooks: one set per stacked part, each part's output rows. */
export interface AqlmCodebooks {
  /** [parts, codebooks, codebook size, 8]: the checkpoint's float16 values, as float32. */
  values: Float32Array;
  /** Output rows of each part, in order; they add up to the weight's rows. */
  partRows: number[];
}

export interface QuantizedWeight {
  format: QuantizedFormat;
  rows: number;
  cols: number;
  /** Stored columns per scale group (1..cols). */
  groupSize: number;
  /**
   * [rows, rowBytes(format, cols)]. int8: one unsigned code a byte. fp8: one e4m3 code a byte.
   * int4 (and nf4, fp4): little-endian 32-bit words of 8 codes, word w holding stored columns 8w..8w+7 with
   * column 8w + INT4_SLOT_COLUMN[s] in bits 4s..4s+3: columns 2i and 2i+1 sit 16 bits apart, so
   * one mask of a word yields two neighbouring values in the two halves of a register. Columns
   * past `cols` in the last word hold their group's zero code (they dequantize to 0).
   */
  codes: Uint8Array;
  /** [rows, numGroups]. */
  scales: Float32Array;
  /** [rows, numGroups] zero codes, or null for symmetric codes (zero at 8 for int4, 128 for int8; fp8, nf4 and fp4 have none). */
  zeros: Uint8Array | null;
  /** int4 only: [rows, numGroups] float32 mins subtracted after scaling, or null (0). */
  mins: Float32Array | null;
  /**
   * [cols]: the input column of each stored column, or null when they are in order. Routed experts
   * stacked along the rows (`stackExperts`) may hold [count · cols]: expert after expert, each
   * expert's run of rows with its own order (GPTQ act-order: one g_idx per expert).
   */
  perm: Int32Array | null;
  /**
   * LLM.int8() (int8, symmetric, one scale per row, no permutation): the activations are
   * quantized to int8 too, per row and step, except the input columns where some row's |x| reaches
   * `threshold`, which multiply the dequantized weight in 16-bit (src/backend/cpu/ops/llm-int8-matmul.ts). null:
   * the activations stay 16-bit.
   */
  mixedInt8: { threshold: number } | null;
  /** AQLM formats' codebooks; null for every other format. */
  codebooks: AqlmCodebooks | null;
}

/** A linear layer's weight [rows, cols] as a checkpoint, load-time quantization or 2:4 sparsity holds it. */
export type LinearWeight = HostTensor | QuantizedWeight | Sparse24Weight;

export function isQuantized(w: LinearWeight): w is QuantizedWeight {
  return 'format' in w;
}

/** Nibble slot s of an int4 word holds the word's column INT4_SLOT_COLUMN[s]. */
export const INT4_SLOT_COLUMN: readonly number[] = [0, 2, 4, 6, 1, 3, 5, 7];
/** The nibble slot of each of a word's 8 columns (the inverse of INT4_SLOT_COLUMN). */
export const INT4_COLUMN_SLOT: readonly number[] = [0, 4, 1, 5, 2, 6, 3, 7];

export function isAqlm(format: string): format is AqlmFormat {
  return format === 'aqlm-1x16' || format === 'aqlm-2x8';
}

/** An AQLM format's codebooks per group, bits per code, and vectors per codebook. */
export function aqlmLayout(format: AqlmFormat): { codebooks: 1 | 2; bits: 8 | 16; size: number } {
  return format === 'aqlm-1x16' ? { codebooks: 1, bits: 16, size: 65536 } : { codebooks: 2, bits: 8, size: 256 };
}

/** Columns of one AQLM code word (AQLM's in_group_size). */
export const AQLM_GROUP = 8;

/** Whether codes are 4 bits, packed in int4's layout (int4, nf4, fp4). */
export function isFourBit(format: QuantizedFormat): boolean {
  return format === 'int4' || format === 'nf4' || format === 'fp4';
}

/** Code bits per value. */
export function codeBits(format: QuantizedFormat): number {
  return isFourBit(format) ? 4 : 8;
}

/**
 * bitsandbytes' NF4 values (QLoRA's NormalFloat: quantiles of a normal distribution, with an
 * exact 0), code 0..15, as float32.
 */
export const NF4_VALUES: Float32Array = Float32Array.from([
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334,
  -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
  0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
]);

/**
 * bitsandbytes' FP4 values: code bit 3 the sign, bits 0..2 an e2m1 pattern whose values
 * (0, 0.0625, 8, 12, 4, 6, 2, 3) are divided by their largest, 12.
 */
export const FP4_VALUES: Float32Array = Float32Array.from([0, 0.0625, 8, 12, 4, 6, 2, 3, -0, -0.0625, -8, -12, -4, -6, -2, -3].map((v) => v / 12));

/** The value table of a table format (nf4, fp4). */
export function codeTable(format: 'nf4' | 'fp4'): Float32Array {
  return format === 'nf4' ? NF4_VALUES : FP4_VALUES;
}

/** The code of zero in a symmetric integer format. */
export function symmetricZero(format: QuantizedFormat): number {
  if (format !== 'int4' && format !== 'int8') throw new Error(`${format} codes have no zero point`);
  return format === 'int4' ? 8 : 128;
}

/** Whether codes are integers with a zero point (int4, int8), rather than values of a table or a float format. */
export function hasZeroPoint(format: QuantizedFormat): boolean {
  return format === 'int4' || format === 'int8';
}

/** Largest code of an integer format. */
export function maxCode(format: QuantizedFormat): number {
  return isFourBit(format) ? 15 : 255;
}

/** Bytes of one stored row of codes. */
export function rowBytes(format: QuantizedFormat, cols: number): number {
  if (isAqlm(format)) return (cols / AQLM_GROUP) * 2;
  return isFourBit(format) ? Math.ceil(cols / 8) * 4 : cols;
}

export function numGroups(w: Pick<QuantizedWeight, 'cols' | 'groupSize'>): number {
  return Math.ceil(w.cols / w.groupSize);
}

/** Byte of stored column `col` in a row of codes, and the shift of its code in that byte. */
export function codePosition(format: QuantizedFormat, col: number): { byte: number; shift: number } {
  if (!isFourBit(format)) return { byte: col, shift: 0 };
  const slot = INT4_COLUMN_SLOT[col & 7];
  return { byte: (col >> 3) * 4 + (slot >> 1), shift: (slot & 1) * 4 };
}

/** Writes `code` at (row, stored column col). */
export function putCode(w: QuantizedWeight, row: number, col: number, code: number): void {
  const base = row * rowBytes(w.format, w.cols);
  if (!isFourBit(w.format)) {
    w.codes[base + col] = code;
    return;
  }
  // Inlined codePosition: checkpoint readers call this for every one of billions of codes.
  const slot = INT4_COLUMN_SLOT[col & 7];
  const at = base + (col >> 3) * 4 + (slot >> 1);
  const shift = (slot & 1) * 4;
  w.codes[at] = (w.codes[at] & ~(0xf << shift)) | ((code & 0xf) << shift);
}

export function getCode(w: QuantizedWeight, row: number, col: number): number {
  const { byte, shift } = codePosition(w.format, col);
  return (w.codes[row * rowBytes(w.format, w.cols) + byte] >> shift) & (isFourBit(w.format) ? 0xf : 0xff);
}

/** The min of (row, group): 0 without mins. */
export function minOf(w: QuantizedWeight, row: number, group: number): number {
  return w.mins === null ? 0 : w.mins[row * numGroups(w) + group];
}

/** The zero code of (row, group); 0 for formats without zero points. */
export function zeroOf(w: QuantizedWeight, row: number, group: number): number {
  if (w.zeros !== null) return w.zeros[row * numGroups(w) + group];
  return hasZeroPoint(w.format) ? symmetricZero(w.format) : 0;
}

/** A weight of the given shape with every code zeroed, scales 0, no zeros and no permutation; fill it with putCode. */
export function emptyQuantizedWeight(format: QuantizedFormat, rows: number, cols: number, groupSize: number, asymmetric: boolean): QuantizedWeight {
  if (!(Number.isInteger(groupSize) && groupSize >= 1 && groupSize <= cols)) throw new Error(`group size ${groupSize} is outside [1, ${cols}]`);
  if (asymmetric && !hasZeroPoint(format)) throw new Error(`${format} weights have no zero points`);
  const groups = Math.ceil(cols / groupSize);
  return {
    format,
    rows,
    cols,
    groupSize,
    codes: new Uint8Array(rows * rowBytes(format, cols)),
    scales: new Float32Array(rows * groups),
    zeros: asymmetric ? new Uint8Array(rows * groups) : null,
    mins: null,
    perm: null,
    mixedInt8: null,
    codebooks: null,
  };
}

/**
 * Sets the codes of a 4-bit row's padding columns (past `cols`) to their group's zero (int4) or to
 * the code of 0 (nf4: 7; fp4: 0), so they dequantize to 0.
 */
export function fillInt4Padding(w: QuantizedWeight): void {
  if (!isFourBit(w.format)) return;
  const padded = Math.ceil(w.cols / 8) * 8;
  const lastGroup = numGroups(w) - 1;
  for (let row = 0; row < w.rows; row++) {
    const zero = w.format === 'nf4' ? 7 : zeroOf(w, row, lastGroup);
    for (let col = w.cols; col < padded; col++) {
      const { byte, shift } = codePosition('int4', col);
      const at = row * rowBytes('int4', w.cols) + byte;
      w.codes[at] = (w.codes[at] & ~(0xf << shift)) | (zero << shift);
    }
  }
}

/**
 * Decodes stored row `row` into `into` [cols], in stored column order. `into` is a Float32Array,
 * so each value is the formula above rounded to float32 once.
 */
export function decodeRow(w: QuantizedWeight, row: number, into: Float32Array): void {
  if (w.codebooks !== null) {
    decodeAqlmRow(w, w.codebooks, row, into);
    return;
  }
  const { cols, groupSize, codes, format } = w;
  const groups = numGroups(w);
  const base = row * rowBytes(format, cols);
  const table = format === 'fp8-e4m3' ? fp8E4m3Values() : format === 'nf4' || format === 'fp4' ? codeTable(format) : null;
  for (let group = 0, start = 0; start < cols; group++, start += groupSize) {
    const scale = w.scales[row * groups + group];
    const zero = zeroOf(w, row, group);
    const min = minOf(w, row, group);
    const end = Math.min(cols, start + groupSize);
    if (format === 'fp8-e4m3') {
      for (let col = start; col < end; col++) into[col] = table![codes[base + col]] * scale;
    } else if (table !== null) {
      for (let col = start; col < end; col++) {
        const slot = INT4_COLUMN_SLOT[col & 7];
        into[col] = table[(codes[base + (col >> 3) * 4 + (slot >> 1)] >> ((slot & 1) * 4)) & 0xf] * scale;
      }
    } else if (format === 'int8') {
      for (let col = start; col < end; col++) into[col] = (codes[base + col] - zero) * scale;
    } else {
      for (let col = start; col < end; col++) {
        const slot = INT4_COLUMN_SLOT[col & 7];
        into[col] = (((codes[base + (col >> 3) * 4 + (slot >> 1)] >> ((slot & 1) * 4)) & 0xf) - zero) * scale - min;
      }
    }
  }
}

/** decodeRow for AQLM: each group's code word looks up its vector(s) in the row's part's codebooks. */
function decodeAqlmRow(w: QuantizedWeight, books: AqlmCodebooks, row: number, into: Float32Array): void {
  const { codebooks: count, size } = aqlmLayout(w.format as AqlmFormat);
  let part = 0;
  for (let first = books.partRows[0]; row >= first; first += books.partRows[++part]);
  const partBase = part * count * size * AQLM_GROUP;
  const scale = w.scales[row];
  const base = row * rowBytes(w.format, w.cols);
  for (let g = 0; g < w.cols / AQLM_GROUP; g++) {
    const lo = w.codes[base + 2 * g];
    const hi = w.codes[base + 2 * g + 1];
    const col = g * AQLM_GROUP;
    if (count === 1) {
      const v = partBase + (lo | (hi << 8)) * AQLM_GROUP;
      for (let j = 0; j < AQLM_GROUP; j++) into[col + j] = books.values[v + j] * scale;
    } else {
      const a = partBase + lo * AQLM_GROUP;
      const b = partBase + (size + hi) * AQLM_GROUP;
      for (let j = 0; j < AQLM_GROUP; j++) into[col + j] = Math.fround(books.values[a + j] + books.values[b + j]) * scale;
    }
  }
}

/** The dequantized weight [rows, cols] in input column order: the reference every quantized matmul must equal. */
export function dequantizeWeight(w: QuantizedWeight): Float32Array {
  const out = new Float32Array(w.rows * w.cols);
  const row = new Float32Array(w.cols);
  for (let r = 0; r < w.rows; r++) {
    decodeRow(w, r, row);
    const perm = rowPerm(w, r);
    for (let col = 0; col < w.cols; col++) out[r * w.cols + (perm === null ? col : perm[col])] = row[col];
  }
  return out;
}

/** The input column of each stored column of row `row` (its expert's, for a stack of per-expert orders), or null when in order. */
export function rowPerm(w: QuantizedWeight, row: number): Int32Array | null {
  if (w.perm === null || w.perm.length === w.cols) return w.perm;
  const runs = w.perm.length / w.cols;
  const run = Math.floor(row / (w.rows / runs));
  return w.perm.subarray(run * w.cols, (run + 1) * w.cols);
}

/**
 * Routed experts' matrices stacked expert after expert along the rows (`perExpert` parts each:
 * gate and up, or down), as `loadQuantizedExperts` takes them. The parts of one expert must share
 * their column order; experts' orders may differ (act-order), and are then kept per expert.
 */
export function stackExperts(parts: readonly QuantizedWeight[], perExpert: number): QuantizedWeight {
  const experts = Array.from({ length: parts.length / perExpert }, (_, e) => parts.slice(e * perExpert, (e + 1) * perExpert));
  for (const own of experts) if (own.some((p) => !samePerm(p.perm, own[0].perm))) throw invalidModel('projections of one expert stacked into one matmul have different act-order permutations (g_idx)');
  const out = concatQuantizedRows(parts.map((p) => ({ ...p, perm: null })));
  if (experts.every((own) => own[0].perm === null)) return out;
  const cols = parts[0].cols;
  const identity = Int32Array.from({ length: cols }, (_, i) => i);
  out.perm = new Int32Array(experts.length * cols);
  experts.forEach((own, e) => out.perm!.set(own[0].perm ?? identity, e * cols));
  return out;
}

/**
 * Stacks weights with the same input columns along their rows (q/k/v, gate/up), as one matmul
 * reads them. They must share format, group size and column permutation; symmetric and
 * asymmetric parts mix by giving the symmetric ones their implicit zeros.
 */
export function concatQuantizedRows(parts: readonly QuantizedWeight[]): QuantizedWeight {
  const [first] = parts;
  if (parts.length === 1) return first;
  const problem = stackingProblem(parts);
  if (problem !== null) throw invalidModel(problem);
  if (isAqlm(first.format)) return concatAqlmRows(parts);
  const rows = parts.reduce((n, p) => n + p.rows, 0);
  const asymmetric = parts.some((p) => p.zeros !== null);
  const out = emptyQuantizedWeight(first.format, rows, first.cols, first.groupSize, asymmetric);
  out.perm = first.perm;
  out.mixedInt8 = first.mixedInt8;
  const groups = numGroups(first);
  if (parts.some((p) => p.mins !== null)) out.mins = new Float32Array(rows * groups);
  let row = 0;
  for (const p of parts) {
    out.codes.set(p.codes, row * rowBytes(p.format, p.cols));
    out.scales.set(p.scales, row * groups);
    if (out.zeros !== null) {
      if (p.zeros !== null) out.zeros.set(p.zeros, row * groups);
      else out.zeros.fill(symmetricZero(p.format), row * groups, (row + p.rows) * groups);
    }
    if (out.mins !== null && p.mins !== null) out.mins.set(p.mins, row * groups);
    row += p.rows;
  }
  return out;
}

/**
 * Why weights cannot be stacked into one quantized matmul (format, group size, act-order
 * permutation or LLM.int8() threshold differ), or null when they can.
 */
export function stackingProblem(parts: readonly QuantizedWeight[]): string | null {
  const [first] = parts;
  for (const p of parts) {
    if (p.format !== first.format || p.cols !== first.cols || p.groupSize !== first.groupSize) {
      return `projections stacked into one matmul are quantized differently: ${describeQuantized(first)} and ${describeQuantized(p)}`;
    }
    if (!samePerm(p.perm, first.perm)) return 'projections stacked into one matmul have different act-order permutations (g_idx)';
    if (p.mixedInt8?.threshold !== first.mixedInt8?.threshold) return 'projections stacked into one matmul have different LLM.int8() outlier thresholds';
  }
  return null;
}

/** The weight's rows in `order` (row r of the result is row order[r]); not for AQLM weights, whose codebooks go by row ranges. */
export function selectQuantizedRows(w: QuantizedWeight, order: Int32Array): QuantizedWeight {
  if (w.codebooks !== null) throw new Error(`${w.format} rows cannot be reordered`);
  const groups = numGroups(w);
  const bytes = rowBytes(w.format, w.cols);
  const out: QuantizedWeight = { ...emptyQuantizedWeight(w.format, order.length, w.cols, w.groupSize, w.zeros !== null), perm: w.perm, mixedInt8: w.mixedInt8 };
  if (w.mins !== null) out.mins = new Float32Array(order.length * groups);
  order.forEach((from, to) => {
    out.codes.set(w.codes.subarray(from * bytes, (from + 1) * bytes), to * bytes);
    out.scales.set(w.scales.subarray(from * groups, (from + 1) * groups), to * groups);
    out.zeros?.set(w.zeros!.subarray(from * groups, (from + 1) * groups), to * groups);
    out.mins?.set(w.mins!.subarray(from * groups, (from + 1) * groups), to * groups);
  });
  return out;
}

/** AQLM parts stacked: codes and scales row after row, each part's codebooks after the last's. */
function concatAqlmRows(parts: readonly QuantizedWeight[]): QuantizedWeight {
  const [first] = parts;
  const rows = parts.reduce((n, p) => n + p.rows, 0);
  const out = emptyQuantizedWeight(first.format, rows, first.cols, first.cols, false);
  const books = parts.map((p) => p.codebooks!);
  const values = new Float32Array(books.reduce((n, b) => n + b.values.length, 0));
  let row = 0;
  let at = 0;
  parts.forEach((p, i) => {
    out.codes.set(p.codes, row * rowBytes(p.format, p.cols));
    out.scales.set(p.scales, row);
    values.set(books[i].values, at);
    at += books[i].values.length;
    row += p.rows;
  });
  out.codebooks = { values, partRows: books.flatMap((b) => b.partRows) };
  return out;
}

function samePerm(a: Int32Array | null, b: Int32Array | null): boolean {
  if (a === null || b === null) return a === b;
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/** e.g. "int4 [96, 64], groups of 32, asymmetric, act-order". */
export function describeQuantized(w: QuantizedWeight): string {
  const group = w.groupSize === w.cols ? 'per channel' : `groups of ${w.groupSize}`;
  const mixed = w.mixedInt8 ? `, LLM.int8() outliers at ${w.mixedInt8.threshold}` : '';
  if (w.codebooks !== null) return `${w.format} [${w.rows}, ${w.cols}], ${w.codebooks.partRows.length} codebook set(s)`;
  return `${w.format} [${w.rows}, ${w.cols}], ${group}${w.zeros ? ', asymmetric' : ''}${w.mins ? ', with mins' : ''}${w.perm ? ', act-order' : ''}${mixed}`;
}

let e4m3Table: Float32Array | null = null;

/**
 * The 256 values of FP8 E4M3 ("e4m3fn": bias 7, no infinities, 0x7f and 0xff are NaN, largest
 * finite 448), built once.
 */
export function fp8E4m3Values(): Float32Array {
  if (e4m3Table) return e4m3Table;
  e4m3Table = new Float32Array(256);
  for (let code = 0; code < 256; code++) {
    const sign = code & 0x80 ? -1 : 1;
    const exponent = (code >> 3) & 0xf;
    const mantissa = code & 0x7;
    if (exponent === 0xf && mantissa === 0x7) e4m3Table[code] = NaN;
    else if (exponent === 0) e4m3Table[code] = sign * (mantissa / 8) * 2 ** -6;
    else e4m3Table[code] = sign * (1 + mantissa / 8) * 2 ** (exponent - 7);
  }
  return e4m3Table;
}

export const FP8_E4M3_MAX = 448;

const f32 = new Float32Array(1);
const f32Bits = new Uint32Array(f32.buffer);

/**
 * The e4m3 code nearest to `value` (ties to the even code, as a float cast does), saturating at
 * ±448. NaN gives 0x7f. Works on the float32 bits (load-time quantization encodes billions of
 * values): the mantissa is rounded to 3 bits, below 2^-6 to multiples of 2^-9 (the subnormals).
 */
export function floatToFp8E4m3(value: number): number {
  if (Number.isNaN(value)) return 0x7f;
  f32[0] = value;
  const bits = f32Bits[0];
  const sign = (bits >>> 24) & 0x80;
  const magnitude = Math.abs(f32[0]);
  if (magnitude >= FP8_E4M3_MAX) return sign | 0x7e;
  if (magnitude < 2 ** -6) {
    // Subnormal codes count 2^-9 steps; 8 steps is the smallest normal, code 0x08, so it carries over.
    const steps = magnitude * 2 ** 9;
    let code = Math.floor(steps);
    const rest = steps - code;
    if (rest > 0.5 || (rest === 0.5 && code % 2 === 1)) code++;
    return sign | code;
  }
  // Round the 23-bit mantissa to 3 bits, to even; a carry moves into the exponent as it should.
  const magnitudeBits = bits & 0x7fffffff;
  const rounded = magnitudeBits + 0x7ffff + ((magnitudeBits >>> 20) & 1);
  const exponent = (rounded >>> 23) - 127 + 7;
  const code = (exponent << 3) | ((rounded >>> 20) & 7);
  return sign | Math.min(code, 0x7e);
}

/**
 * Whether routed MoE experts run in this weight's layout (`loadQuantizedExperts`): int4, int8 or
 * fp8-e4m3 codes with per-group scales, in input column order or act-order (each expert its own
 * order), without LLM.int8() outliers or codebooks. Experts in any other format are loaded 16-bit.
 */
export function expertKernelsTake(w: QuantizedWeight): boolean {
  // The expert kernels read no per-group float minimum (GGUF Q4_K's): such experts load 16-bit.
  return (w.format === 'int4' || w.format === 'int8' || w.format === 'fp8-e4m3') && w.mixedInt8 === null && w.codebooks === null && w.mins === null;
}

/**
 * Throws unless `w` is a vocabulary matrix whose rows the embedding gather reads: int4 or int8
 * codes in input column order (no act-order, LLM.int8() outliers or codebooks), as a GGUF file's
 * repacked token embedding and LM head are.
 */
export function checkQuantizedTable(w: QuantizedWeight): void {
  if ((w.format !== 'int4' && w.format !== 'int8') || w.perm !== null || w.mixedInt8 !== null || w.codebooks !== null) {
    throw new Error(`a quantized embedding table in ${describeQuantized(w)}: only int4 and int8 tables in input column order are gathered`);
  }
}

/** Throws, naming `what`, unless `w` holds `count` experts' matrices that the expert kernels take. */
export function checkQuantizedExperts(w: QuantizedWeight, count: number, what: string): void {
  if (!expertKernelsTake(w)) throw new Error(`${what}: experts in ${describeQuantized(w)} are not run quantized (int4, int8 or fp8-e4m3 only)`);
  if (!(Number.isInteger(count) && count >= 1 && w.rows % count === 0)) throw new Error(`${what}: ${w.rows} rows do not split into ${count} experts`);
  if (w.perm !== null && w.perm.length !== count * w.cols) throw new Error(`${what}: an act-order permutation of ${w.perm.length} columns is not one of ${w.cols} per expert for ${count} experts`);
}
