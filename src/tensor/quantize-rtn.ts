import {
  codeTable,
  emptyQuantizedWeight,
  fillInt4Padding,
  floatToFp8E4m3,
  FP8_E4M3_MAX,
  INT4_COLUMN_SLOT,
  numGroups,
  rowBytes,
  type AqlmFormat,
  type QuantizedWeight,
} from './quantized-weight.ts';

/** What `--quantization` makes of a 16-bit checkpoint's linear layers at load. */
export type LinearQuantization = 'fp8' | 'int8' | 'int4' | 'nf4' | 'llm-int8';

/**
 * What `--quantization` makes of a 16-bit checkpoint at load: its linear layers in one of Keel's
 * layouts, or (`mxfp4`) its routed MoE experts in MXFP4, as gpt-oss ships them (src/tensor/mxfp4.ts).
 * The AQLM layouts are for `--load-format dummy` alone (random codes and codebooks, for
 * benchmarks): a real checkpoint's AQLM codes come from a search of hours (`keel quantize --method vq`).
 */
export type LoadTimeQuantization = LinearQuantization | 'mxfp4' | AqlmFormat;

export const LINEAR_QUANTIZATIONS: readonly LinearQuantization[] = ['fp8', 'int8', 'int4', 'nf4', 'llm-int8'];
export const DUMMY_ONLY_QUANTIZATIONS: readonly AqlmFormat[] = ['aqlm-2x8', 'aqlm-1x16'];
export const LOAD_TIME_QUANTIZATIONS: readonly LoadTimeQuantization[] = ['fp8', 'int8', 'int4', 'mxfp4', 'nf4', 'llm-int8', ...DUMMY_ONLY_QUANTIZATIONS];

/** Input columns per int4 scale group (the common choice of GPTQ and AWQ checkpoints). */
export const INT4_GROUP_SIZE = 128;

/** Input columns per NF4 block (bitsandbytes' default blocksize). */
export const NF4_BLOCK_SIZE = 64;

/** LLM.int8()'s outlier threshold (bitsandbytes' and transformers' default llm_int8_threshold). */
export const LLM_INT8_THRESHOLD = 6.0;

/**
 * Round-to-nearest quantization of a weight [rows, cols] (row-major float32), with no calibration:
 *
 * - `fp8`: e4m3 codes, one scale per output row, max|w| / 448 (vLLM's load-time FP8 uses one per
 *   tensor; a row's own range costs the same bytes and loses less);
 * - `int8`: symmetric codes -127..127 (stored +128), one scale per row, max|w| / 127;
 * - `int4`: asymmetric codes 0..15 with a zero point per group of 128 columns, scale
 *   (max - min) / 15 and zero round(-min / scale), so each group's range maps onto all 16 codes;
 * - `nf4`: bitsandbytes' NF4 with blocks of 64 columns (quantizeTable4);
 * - `llm-int8`: `int8`'s codes and scales (bitsandbytes' CB and SCB / 127), multiplied by
 *   LLM.int8()'s mixed decomposition with outlier threshold 6.
 *
 * Values round half to even, as torch.round does. A row or group of zeros gets scale 1 (codes 0).
 */
export function quantizeRoundToNearest(values: Float32Array, rows: number, cols: number, method: LinearQuantization): QuantizedWeight {
  if (values.length !== rows * cols) throw new Error(`quantizeRoundToNearest: ${values.length} values for [${rows}, ${cols}]`);
  if (method === 'int4') return quantizeInt4(values, rows, cols);
  if (method === 'nf4') return quantizeTable4(values, rows, cols, 'nf4', Math.min(NF4_BLOCK_SIZE, cols));
  const w = roundToNearestLayout(rows, cols, method);
  const top = method === 'fp8' ? FP8_E4M3_MAX : 127;
  for (let row = 0; row < rows; row++) {
    const at = row * cols;
    let max = 0;
    for (let col = 0; col < cols; col++) max = Math.max(max, Math.abs(values[at + col]));
    const scale = max === 0 ? 1 : Math.fround(max / top);
    w.scales[row] = scale;
    // One code a byte, in column order (Keel's int8 and fp8 layouts): written directly, as a
    // checkpoint of billions of values is quantized here.
    if (method === 'fp8') for (let col = 0; col < cols; col++) w.codes[at + col] = floatToFp8E4m3(values[at + col] / scale);
    else for (let col = 0; col < cols; col++) w.codes[at + col] = 128 + Math.max(-127, Math.min(127, roundHalfEven(values[at + col] / scale)));
  }
  return w;
}

/**
 * The empty weight (format, groups, zero points) that quantizeRoundToNearest fills for `method`;
 * also what random weights of that method are drawn into (src/models/dummy-weights.ts).
 */
export function roundToNearestLayout(rows: number, cols: number, method: LinearQuantization): QuantizedWeight {
  if (method === 'int4') return emptyQuantizedWeight('int4', rows, cols, Math.min(INT4_GROUP_SIZE, cols), true);
  if (method === 'nf4') return emptyQuantizedWeight('nf4', rows, cols, Math.min(NF4_BLOCK_SIZE, cols), false);
  const w = emptyQuantizedWeight(method === 'fp8' ? 'fp8-e4m3' : 'int8', rows, cols, cols, false);
  if (method === 'llm-int8') w.mixedInt8 = { threshold: LLM_INT8_THRESHOLD };
  return w;
}

/**
 * bitsandbytes' 4-bit blockwise quantization of each row, in blocks of `blockSize` columns: the
 * block's absmax is its scale, each value divided by it (as x · (1 / absmax) in float32, clamped
 * to [-1, 1]) takes the table code whose value is nearest, a value exactly between two taking the
 * lower one (torch.bucketize over the midpoints, as bitsandbytes' reference quantizer does). A
 * block of zeros gets scale 0.
 */
export function quantizeTable4(values: Float32Array, rows: number, cols: number, format: 'nf4' | 'fp4', blockSize: number): QuantizedWeight {
  const table = codeTable(format);
  // Codes in increasing order of value, and the float32 midpoints between neighbours.
  const order = Array.from(table.keys()).sort((a, b) => table[a] - table[b] || a - b);
  const mids = Float32Array.from(order.slice(1), (code, i) => Math.fround(table[order[i]] + table[code]) / 2);
  const w = emptyQuantizedWeight(format, rows, cols, blockSize, false);
  const groups = numGroups(w);
  for (let row = 0; row < rows; row++) {
    for (let group = 0; group < groups; group++) {
      const start = row * cols + group * blockSize;
      const end = row * cols + Math.min(cols, (group + 1) * blockSize);
      let absmax = 0;
      for (let i = start; i < end; i++) absmax = Math.max(absmax, Math.abs(values[i]));
      w.scales[row * groups + group] = absmax;
      const inverse = Math.fround(1 / Math.max(absmax, 1e-38));
      for (let i = start; i < end; i++) {
        const scaled = Math.max(-1, Math.min(1, Math.fround(values[i] * inverse)));
        // The number of midpoints below the value (binary search: load-time quantization codes billions).
        let lo = 0;
        let hi = mids.length;
        while (lo < hi) {
          const mid = (lo + hi) >> 1;
          if (mids[mid] < scaled) lo = mid + 1;
          else hi = mid;
        }
        const rank = lo;
        const col = i - row * cols;
        const slot = INT4_COLUMN_SLOT[col & 7];
        w.codes[row * rowBytes(format, cols) + (col >> 3) * 4 + (slot >> 1)] |= order[rank] << ((slot & 1) * 4);
      }
    }
  }
  fillInt4Padding(w);
  return w;
}

function quantizeInt4(values: Float32Array, rows: number, cols: number): QuantizedWeight {
  const w = roundToNearestLayout(rows, cols, 'int4');
  const groupSize = w.groupSize;
  const groups = numGroups(w);
  for (let row = 0; row < rows; row++) {
    const rowStart = row * rowBytes('int4', cols);
    for (let group = 0; group < groups; group++) {
      const start = row * cols + group * groupSize;
      const end = row * cols + Math.min(cols, (group + 1) * groupSize);
      // The range always holds 0, so that zero weights (and padding) stay exactly zero.
      let min = 0;
      let max = 0;
      for (let i = start; i < end; i++) {
        min = Math.min(min, values[i]);
        max = Math.max(max, values[i]);
      }
      const scale = max === min ? 1 : Math.fround((max - min) / 15);
      const zero = Math.max(0, Math.min(15, roundHalfEven(-min / scale)));
      w.scales[row * groups + group] = scale;
      w.zeros![row * groups + group] = zero;
      for (let i = start; i < end; i++) {
        const col = i - row * cols;
        const code = Math.max(0, Math.min(15, roundHalfEven(values[i] / scale) + zero));
        const slot = INT4_COLUMN_SLOT[col & 7];
        w.codes[rowStart + (col >> 3) * 4 + (slot >> 1)] |= code << ((slot & 1) * 4);
      }
    }
  }
  fillInt4Padding(w);
  return w;
}

/** Rounds half to even, as torch.round and CUDA's rintf do. */
export function roundHalfEven(v: number): number {
  const floor = Math.floor(v);
  const rest = v - floor;
  if (rest > 0.5) return floor + 1;
  if (rest < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}
