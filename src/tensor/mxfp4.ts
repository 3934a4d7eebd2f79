/*
 * MXFP4, the OCP Microscaling format gpt-oss stores its MoE experts in: FP4 E2M1 values (1 sign,
 * 2 exponent bits with bias 1, 1 mantissa bit: ±0, 0.5, 1, 1.5, 2, 3, 4, 6), two per byte, and one
 * E8M0 scale (a bare power of two, 2^(code - 127); code 255 is NaN) shared by each block of 32
 * consecutive values along the last dimension:
 *
 *   W[..., col] = fp4(nibble(col)) * 2^(scale[..., col / 32] - 127)
 *
 * Element 2i of a byte's pair is its low nibble, 2i + 1 its high nibble (transformers'
 * `_convert_moe_packed_tensors`). gpt-oss checkpoints hold each expert tensor as `NAME_blocks`
 * U8 [..., rows, cols / 32, 16] and `NAME_scales` U8 [..., rows, cols / 32], the last dimension
 * being the input (reduction) dimension: the layout Keel keeps on the device, flattened to
 * `blocks` [..., rows, cols / 2] and `scales` [..., rows, cols / 32].
 */
import { invalidArgument } from '../errors.ts';

/** Values per shared scale. */
export const MXFP4_BLOCK = 32;

/** The value of each FP4 E2M1 code 0..15. */
export const FP4_E2M1_VALUES: readonly number[] = [0, 0.5, 1, 1.5, 2, 3, 4, 6, -0, -0.5, -1, -1.5, -2, -3, -4, -6];

/**
 * Largest E8M0 scale code Keel takes: the CUDA kernels fold the scale and a 2^14 of their FP4
 * decoding into one float32 power of two, which must stay finite. Real checkpoints' scales sit
 * near 2^-10; a block scaled past 2^113 would not be a weight.
 */
export const MXFP4_MAX_SCALE_CODE = 240;

/** Packed MXFP4 values of shape [...lead, rows, cols] (cols a multiple of 32). */
export interface Mxfp4Weight {
  shape: number[];
  /** numel / 2 bytes: two codes each, the even column in the low nibble. */
  blocks: Uint8Array;
  /** numel / 32 E8M0 scale codes. */
  scales: Uint8Array;
}

export function isMxfp4(w: object): w is Mxfp4Weight {
  return 'blocks' in w && 'scales' in w;
}

/** Checks that blocks and scales fill the shape, and every scale is a finite one Keel takes. */
export function checkMxfp4(w: Mxfp4Weight, what: string): void {
  const numel = w.shape.reduce((n, d) => n * d, 1);
  const cols = w.shape[w.shape.length - 1];
  if (!(cols % MXFP4_BLOCK === 0)) throw new Error(`${what}: MXFP4 rows of ${cols} values are not whole blocks of ${MXFP4_BLOCK}`);
  if (w.blocks.length !== numel / 2 || w.scales.length !== numel / MXFP4_BLOCK) {
    throw new Error(`${what}: ${w.blocks.length} MXFP4 bytes and ${w.scales.length} scales do not fill [${w.shape.join(', ')}]`);
  }
  for (let i = 0; i < w.scales.length; i++) {
    if (w.scales[i] > MXFP4_MAX_SCALE_CODE) {
      throw new Error(`${what}: MXFP4 block ${i} has scale code ${w.scales[i]} (${w.scales[i] === 255 ? 'NaN' : `2^${w.scales[i] - 127}`}); Keel takes codes up to ${MXFP4_MAX_SCALE_CODE}`);
    }
  }
}

/** 2^(code - 127), the value of an E8M0 scale code (255: NaN). */
export function e8m0Value(code: number): number {
  return code === 255 ? NaN : 2 ** (code - 127);
}

/**
 * Values [from, from + count) of the flattened weight, decoded into `into` (float32: every value
 * is exact, a power of two times an FP4 value). `from` and `count` are multiples of 32.
 */
export function decodeMxfp4(w: Mxfp4Weight, from: number, count: number, into: Float32Array): void {
  for (let block = from / MXFP4_BLOCK; block < (from + count) / MXFP4_BLOCK; block++) {
    const scale = e8m0Value(w.scales[block]);
    const out = block * MXFP4_BLOCK - from;
    for (let i = 0; i < MXFP4_BLOCK / 2; i++) {
      const byte = w.blocks[block * (MXFP4_BLOCK / 2) + i];
      into[out + 2 * i] = FP4_E2M1_VALUES[byte & 0xf] * scale;
      into[out + 2 * i + 1] = FP4_E2M1_VALUES[byte >> 4] * scale;
    }
  }
}

/** The whole weight as float32 values, in its shape. */
export function dequantizeMxfp4(w: Mxfp4Weight): Float32Array {
  const out = new Float32Array(w.blocks.length * 2);
  decodeMxfp4(w, 0, out.length, out);
  return out;
}

/**
 * Round-to-nearest MXFP4 of values [...lead, rows, cols] as the OCP MX specification defines it
 * (section 6.3): a block's shared exponent is floor(log2(max|v|)) - 2 (2 being E2M1's largest
 * exponent), clamped to E8M0's range, and each value divided by it is rounded to the nearest
 * E2M1 value, ties to the even code, magnitudes past 6 saturating to 6. A block of zeros gets
 * scale 2^0.
 */
export function quantizeMxfp4(values: Float32Array, shape: number[]): Mxfp4Weight {
  const numel = shape.reduce((n, d) => n * d, 1);
  if (values.length !== numel) throw new Error(`quantizeMxfp4: ${values.length} values for [${shape.join(', ')}]`);
  const w: Mxfp4Weight = { shape: [...shape], blocks: new Uint8Array(numel / 2), scales: new Uint8Array(numel / MXFP4_BLOCK) };
  if (shape[shape.length - 1] % MXFP4_BLOCK !== 0) throw new Error(`quantizeMxfp4: rows of ${shape[shape.length - 1]} values are not whole blocks of ${MXFP4_BLOCK}`);
  for (let block = 0; block < w.scales.length; block++) {
    const start = block * MXFP4_BLOCK;
    let max = 0;
    for (let i = start; i < start + MXFP4_BLOCK; i++) max = Math.max(max, Math.abs(values[i]));
    const exponent = max === 0 ? 0 : Math.max(-127, Math.min(MXFP4_MAX_SCALE_CODE - 127, Math.floor(Math.log2(max)) - 2));
    w.scales[block] = exponent + 127;
    const inverse = 2 ** -exponent;
    for (let i = 0; i < MXFP4_BLOCK; i += 2) {
      const lo = fp4Code(values[start + i] * inverse);
      const hi = fp4Code(values[start + i + 1] * inverse);
      w.blocks[(start + i) >> 1] = lo | (hi << 4);
    }
  }
  return w;
}

/**
 * E2M1 codes by quarter steps of magnitude, so that encoding (billions of values at load) is a
 * lookup: every halfway point between neighbouring E2M1 magnitudes (0.25, 0.75, 1.25, 1.75, 2.5,
 * 3.5, 5) is a whole number of quarters. CODE_BETWEEN[i]: the code of magnitudes in (i/4, (i+1)/4);
 * CODE_AT[i]: of exactly i/4, a halfway point going to the even code. Past 8, codes saturate at 7.
 */
const QUARTERS = 32;
const HALFWAY_QUARTERS = FP4_E2M1_VALUES.slice(0, 7).map((v, c) => 2 * (v + FP4_E2M1_VALUES[c + 1]));
const CODE_BETWEEN = Uint8Array.from({ length: QUARTERS }, (_, i) => HALFWAY_QUARTERS.filter((h) => h <= i).length);
const CODE_AT = Uint8Array.from({ length: QUARTERS }, (_, i) => {
  const below = HALFWAY_QUARTERS.filter((h) => h < i).length;
  return HALFWAY_QUARTERS.includes(i) && below % 2 === 1 ? below + 1 : below;
});

/** The E2M1 code nearest to v: ties to the even code, magnitudes past 6 saturate; zero and NaN give code 0. */
export function fp4Code(v: number): number {
  const quarters = Math.abs(v) * 4;
  if (!(quarters > 0)) return 0;
  if (quarters >= QUARTERS) return v < 0 ? 15 : 7;
  const i = quarters | 0;
  const code = quarters === i ? CODE_AT[i] : CODE_BETWEEN[i];
  return code === 0 ? 0 : (v < 0 ? 8 : 0) | code;
}

/**
 * Rows `rows[i]` of each of the matrices `matrices` (indices along the leading dimension) of a
 * [E, R, C] weight, as a new [matrices.length, rows.length, C] weight, or of its `columns` (whole
 * 32-value blocks: a tensor-parallel device's part of the input dimension): bytes and scales move,
 * nothing is decoded.
 */
export function gatherMxfp4Rows(w: Mxfp4Weight, matrices: readonly number[], rows: readonly number[], columns?: { start: number; count: number }): Mxfp4Weight {
  if (w.shape.length !== 3) throw new Error(`gatherMxfp4Rows: weight [${w.shape.join(', ')}] is not [matrices, rows, cols]`);
  const [, r, c] = w.shape;
  const { start, count } = columns ?? { start: 0, count: c };
  if (start % MXFP4_BLOCK !== 0 || count % MXFP4_BLOCK !== 0 || start + count > c) {
    throw invalidArgument(`MXFP4 columns ${start}..${start + count - 1} of ${c} do not fall on its ${MXFP4_BLOCK}-value blocks: choose a tensor-parallel size that splits the blocks evenly`);
  }
  const [rowBytes, rowScales] = [c / 2, c / MXFP4_BLOCK];
  const [outBytes, outScales, byteStart, scaleStart] = [count / 2, count / MXFP4_BLOCK, start / 2, start / MXFP4_BLOCK];
  const out: Mxfp4Weight = {
    shape: [matrices.length, rows.length, count],
    blocks: new Uint8Array(matrices.length * rows.length * outBytes),
    scales: new Uint8Array(matrices.length * rows.length * outScales),
  };
  matrices.forEach((m, i) =>
    rows.forEach((row, j) => {
      const from = m * r + row;
      const to = i * rows.length + j;
      out.blocks.set(w.blocks.subarray(from * rowBytes + byteStart, from * rowBytes + byteStart + outBytes), to * outBytes);
      out.scales.set(w.scales.subarray(from * rowScales + scaleStart, from * rowScales + scaleStart + outScales), to * outScales);
    }),
  );
  return out;
}
