import { halfToFloatTable } from '../../tensor/host-dtype.ts';
import { emptyQuantizedWeight, INT4_SLOT_COLUMN, type QuantizedWeight } from '../../tensor/quantized-weight.ts';
import { scaleMin } from './dequantize-k-blocks.ts';
import type { GgmlType } from './ggml-types.ts';

/*
 * GGUF blocks repacked into Keel's quantized layouts (src/tensor/quantized-weight.ts) instead of
 * being dequantized: every value decodes to what the dequantizers (dequantize-blocks.ts,
 * dequantize-k-blocks.ts) give, so the layers run ggml's weights at int8/int4 memory and speed.
 *
 *   Q8_0  d, int8 q[32]        int8, groups of 32, symmetric: code q + 128, scale d
 *   Q4_0  d, nibbles[16]       int4, groups of 32, symmetric: code q (zero 8), scale d
 *   Q4_1  d, m, nibbles[16]    int4, groups of 32, zero 0, scale d, min −m
 *   Q4_K  d, dmin, 6-bit scale and min per 32, nibbles
 *                              int4, groups of 32, zero 0, scale fround(d·scale), min fround(dmin·min)
 *   Q6_K  d, int8 scale per 16, 6-bit q
 *                              int8, groups of 16, symmetric: code q + 96 (q − 32 + 128), scale fround(d·scale)
 *
 * Each GGUF row (a weight's output row: blocks run along the input columns) is a row of the layout.
 * Other types are dequantized: Q5_0/Q5_1/Q5_K would be exact only as int8 (8 bits for 5), Q2_K/Q3_K
 * as int4 in groups of 16, which the int4 kernels do not take (they read 32 columns a group).
 */

/** GGUF types repacked rather than dequantized. */
export function repackable(type: GgmlType): boolean {
  return type.name in REPACKERS;
}

/** The [rows, cols] weight stored as `data` (blocks of `type`, row after row) in Keel's layout. */
export function repackBlocks(type: GgmlType, data: Uint8Array, rows: number, cols: number): QuantizedWeight {
  const repack = REPACKERS[type.name];
  if (repack === undefined) throw new Error(`${type.name} blocks are not repacked`);
  if (cols % type.blockElements !== 0) throw new Error(`${type.name}: ${cols} columns are not whole blocks of ${type.blockElements}`);
  if (data.length !== (rows * cols / type.blockElements) * type.blockBytes) throw new Error(`${type.name}: ${data.length} bytes for [${rows}, ${cols}]`);
  return repack(data, rows, cols);
}

const REPACKERS: Record<string, (data: Uint8Array, rows: number, cols: number) => QuantizedWeight> = {
  Q8_0: repackQ8_0,
  Q4_0: (data, rows, cols) => repackNibbleBlocks(data, rows, cols, false),
  Q4_1: (data, rows, cols) => repackNibbleBlocks(data, rows, cols, true),
  Q4_K: repackQ4_K,
  Q6_K: repackQ6_K,
};

const f = Math.fround;

/** Group g of a row is block g: int8 q is the unsigned code q + 128 (its top bit flipped). */
function repackQ8_0(data: Uint8Array, rows: number, cols: number): QuantizedWeight {
  const half = halfToFloatTable();
  const w = emptyQuantizedWeight('int8', rows, cols, 32, false);
  for (let block = 0, at = 0; block < w.scales.length; block++, at += 34) {
    w.scales[block] = half[data[at] | (data[at + 1] << 8)];
    const codes = block * 32;
    for (let j = 0; j < 32; j++) w.codes[codes + j] = data[at + 2 + j] ^ 0x80;
  }
  return w;
}

/** Of each byte of an int4 word, the word's columns in its low and high nibble (INT4_SLOT_COLUMN, two slots a byte). */
const BYTE_COLUMNS: readonly (readonly [number, number])[] = [0, 1, 2, 3].map((b) => [INT4_SLOT_COLUMN[2 * b], INT4_SLOT_COLUMN[2 * b + 1]] as const);

/**
 * Writes 32 codes (`nibbles`, in column order) as int4's four words at byte `at`: a group of 32 is
 * 16 bytes of its row, and blocks in file order fill the codes in order.
 */
function putGroup(codes: Uint8Array, at: number, nibbles: Uint8Array): void {
  for (let word = 0; word < 4; word++) {
    for (let b = 0; b < 4; b++) codes[at + 4 * word + b] = nibbles[8 * word + BYTE_COLUMNS[b][0]] | (nibbles[8 * word + BYTE_COLUMNS[b][1]] << 4);
  }
}

/** Q4_0 (d; zero 8) and Q4_1 (d, m; zero 0, min −m): byte j's low nibble is value j, its high nibble value j + 16. */
function repackNibbleBlocks(data: Uint8Array, rows: number, cols: number, withMin: boolean): QuantizedWeight {
  const half = halfToFloatTable();
  const w = emptyQuantizedWeight('int4', rows, cols, 32, withMin);
  if (withMin) w.mins = new Float32Array(w.scales.length);
  const blockBytes = withMin ? 20 : 18;
  const nibbles = new Uint8Array(32);
  for (let block = 0, at = 0; block < w.scales.length; block++, at += blockBytes) {
    w.scales[block] = half[data[at] | (data[at + 1] << 8)];
    if (withMin) w.mins![block] = -half[data[at + 2] | (data[at + 3] << 8)];
    const values = at + (withMin ? 4 : 2);
    for (let j = 0; j < 16; j++) {
      nibbles[j] = data[values + j] & 0x0f;
      nibbles[j + 16] = data[values + j] >> 4;
    }
    putGroup(w.codes, block * 16, nibbles);
  }
  return w;
}

/**
 * A Q4_K super-block is 8 groups of 32: group j's scale and min are 6-bit integers (unpacked as
 * dequantize-k-blocks.ts's scaleMin) times d and dmin; values 64c..64c+63 take the low then the high
 * nibbles of bytes 32c..32c+31.
 */
function repackQ4_K(data: Uint8Array, rows: number, cols: number): QuantizedWeight {
  const half = halfToFloatTable();
  const w = emptyQuantizedWeight('int4', rows, cols, 32, true);
  w.mins = new Float32Array(w.scales.length);
  const low = new Uint8Array(32);
  const high = new Uint8Array(32);
  for (let sb = 0, at = 0; sb < (rows * cols) / 256; sb++, at += 144) {
    const d = half[data[at] | (data[at + 1] << 8)];
    const dmin = half[data[at + 2] | (data[at + 3] << 8)];
    for (let j = 0; j < 8; j++) {
      const [scale, min] = scaleMin(data, at + 4, j);
      w.scales[sb * 8 + j] = f(d * scale);
      w.mins[sb * 8 + j] = f(dmin * min);
    }
    for (let c = 0; c < 4; c++) {
      const q = at + 16 + 32 * c;
      for (let l = 0; l < 32; l++) {
        low[l] = data[q + l] & 0x0f;
        high[l] = data[q + l] >> 4;
      }
      putGroup(w.codes, (sb * 8 + 2 * c) * 16, low);
      putGroup(w.codes, (sb * 8 + 2 * c + 1) * 16, high);
    }
  }
  return w;
}

/**
 * Q6_K's group g of 16 (g = 0..15 in a super-block) has the int8 scale at byte 192 + g; value
 * l + 32k of half p (k = 0..3, l < 32) takes its low nibble from byte 64p + l (k even) or
 * 64p + l + 32 (k odd), the low half for k < 2, and bits 2k..2k+1 of byte 128 + 32p + l
 * (dequantize-k-blocks.ts's layout).
 */
function repackQ6_K(data: Uint8Array, rows: number, cols: number): QuantizedWeight {
  const half = halfToFloatTable();
  const w = emptyQuantizedWeight('int8', rows, cols, 16, false);
  for (let sb = 0, at = 0; sb < (rows * cols) / 256; sb++, at += 210) {
    const d = half[data[at + 208] | (data[at + 209] << 8)];
    for (let g = 0; g < 16; g++) w.scales[sb * 16 + g] = f(d * ((data[at + 192 + g] << 24) >> 24));
    const codes = sb * 256;
    for (let p = 0; p < 2; p++) {
      const low = at + 64 * p;
      const high = at + 128 + 32 * p;
      for (let k = 0; k < 4; k++) {
        for (let l = 0; l < 32; l++) {
          const byte = data[low + l + 32 * (k & 1)];
          const nibble = k < 2 ? byte & 0x0f : byte >> 4;
          w.codes[codes + 128 * p + 32 * k + l] = (nibble | (((data[high + l] >> (2 * k)) & 3) << 4)) + 96;
        }
      }
    }
  }
  return w;
}
