import type { CudaDevice } from '../cuda-device.ts';
import type { DevicePtr } from '../driver-api.ts';
import { getCode, isFourBit, numGroups, type QuantizedFormat, type QuantizedWeight } from '../../../tensor/quantized-weight.ts';

// marlin-layout.cu: Keel's quantized layout re-laid for marlin-gemm.cu at load, and back to bf16.
// marlinLayoutOnHost is its CPU twin (what the tests compare the device's bytes with).

const THREADS = 256;
const MAX_BLOCKS = 8192;

/** Formats marlin-gemm.cu decodes (bitsandbytes' table formats and LLM.int8() keep the classic kernels). */
export function marlinFormat(format: QuantizedFormat): boolean {
  return format === 'int4' || format === 'int8' || format === 'fp8-e4m3';
}

/**
 * Why a weight cannot take the fragment layout, or null when it can: rows in whole strips of 16,
 * columns in whole 64-column warp steps, and every scale group whole 64-column steps (or one group a row).
 */
export function marlinProblem(w: Pick<QuantizedWeight, 'format' | 'rows' | 'cols' | 'groupSize' | 'mixedInt8' | 'mins'>): string | null {
  if (!marlinFormat(w.format)) return `${w.format} codes are not decoded by the fragment-layout GEMM`;
  if (w.mixedInt8 !== null) return "LLM.int8() weights keep their own kernel";
  if (w.mins !== null) return 'int4 with mins (GGUF Q4_K) keeps the row-layout kernels';
  if (w.rows % 16 !== 0 || w.cols % 64 !== 0) return `[${w.rows}, ${w.cols}] is not in 16-row strips of 64-column steps`;
  if (w.groupSize % 64 !== 0 && w.groupSize < w.cols) return `groups of ${w.groupSize} columns are not whole 64-column steps`;
  return null;
}

/** FORMAT of marlin-layout.cu: 0 for 4-bit codes, 1 for 8-bit ones. */
function layoutFormat(format: QuantizedFormat): number {
  return isFourBit(format) ? 0 : 1;
}

/** The device buffers of a weight in the fragment layout, written by launchMarlinLayout. */
export interface MarlinBuffers {
  codes: DevicePtr;
  scales: DevicePtr;
  zeros: DevicePtr;
}

/**
 * Writes `to` from a weight's codes, scales and zeros in Keel's layout already on the device
 * (`from`, the same shape): the one-time permutation of loading.
 */
export function launchMarlinLayout(device: CudaDevice, to: MarlinBuffers, from: MarlinBuffers, w: Pick<QuantizedWeight, 'format' | 'rows' | 'cols' | 'groupSize'>): void {
  const format = layoutFormat(w.format);
  const words = (w.rows * w.cols) / (format === 0 ? 8 : 4);
  const pack = device.kernel('marlin-layout.cu', 'marlin_pack_kernel', 'ppii', { FORMAT: format });
  device.launch(pack, [Math.min(MAX_BLOCKS, Math.ceil(words / THREADS))], [THREADS], 0, [to.codes, from.codes, w.rows, w.cols]);
  const params = device.kernel('marlin-layout.cu', 'marlin_params_kernel', 'ppiii', { FORMAT: format });
  const groups = numGroups(w);
  const blocks = Math.min(MAX_BLOCKS, Math.ceil((w.rows * groups) / THREADS));
  device.launch(params, [blocks], [THREADS], 0, [to.scales, from.scales, w.rows, groups, 4]);
  if (from.zeros !== 0) device.launch(params, [blocks], [THREADS], 0, [to.zeros, from.zeros, w.rows, groups, 1]);
}

/** out [rows, cols] bf16 = W dequantized from the fragment layout, in input column order (`perm`: act-order, 0 none). */
export function launchMarlinDequantize(device: CudaDevice, out: DevicePtr, w: MarlinBuffers & { format: QuantizedFormat; rows: number; cols: number; groupSize: number; groups: number; perm: DevicePtr }): void {
  const format = layoutFormat(w.format);
  const kernel = device.kernel('marlin-layout.cu', 'marlin_dequantize_kernel', 'pppppiiiii', { FORMAT: format });
  const words = (w.rows * w.cols) / (format === 0 ? 8 : 4);
  device.launch(kernel, [Math.min(MAX_BLOCKS, Math.ceil(words / THREADS))], [THREADS], 0, [
    out, w.codes, w.scales, w.zeros, w.perm, w.rows, w.cols, w.groups, Math.min(w.groupSize, w.cols), w.format === 'fp8-e4m3' ? 1 : 0,
  ]);
}

/**
 * The CPU twin of launchMarlinLayout, written from marlin-layout.cu's description (not its index
 * code): codes as little-endian 32-bit fragment words, scales and zeros [rows / 16, groups, 16].
 */
export function marlinLayoutOnHost(w: QuantizedWeight): { codes: Uint8Array; scales: Float32Array; zeros: Uint8Array | null } {
  const problem = marlinProblem(w);
  if (problem !== null) throw new Error(`marlinLayoutOnHost: ${problem}`);
  const four = isFourBit(w.format);
  const { rows, cols } = w;
  const words = new Uint32Array((rows * cols) / (four ? 8 : 4));
  const unitCols = four ? 64 : 32;
  const units = cols / unitCols;
  for (let strip = 0; strip < rows / 16; strip++) {
    for (let unit = 0; unit < units; unit++) {
      for (let lane = 0; lane < 32; lane++) {
        const g = lane >> 2;
        const t = lane & 3;
        for (let c = 0; c < 4; c++) {
          const at = ((strip * units + unit) * 32 + lane) * 4 + c;
          // The code of fragment register `reg` (b0, b1) of n8 tile `tile`, its column `hi` of two, at k step `step`.
          const code = (step: number, tile: number, reg: number, hi: number) => getCode(w, strip * 16 + tile * 8 + g, step * 16 + 2 * t + 8 * reg + hi);
          let v = 0;
          if (four) {
            for (let pair = 0; pair < 4; pair++) {
              for (let hi = 0; hi < 2; hi++) v |= code(unit * 4 + c, pair >> 1, pair & 1, hi) << (4 * pair + 16 * hi);
            }
          } else {
            for (let byte = 0; byte < 4; byte++) v |= code(unit * 2 + (c >> 1), c & 1, byte >> 1, byte & 1) << (8 * byte);
          }
          words[at] = v >>> 0;
        }
      }
    }
  }
  const groups = numGroups(w);
  const transpose = <T extends Float32Array | Uint8Array>(from: T, to: T): T => {
    for (let row = 0; row < rows; row++) {
      for (let group = 0; group < groups; group++) to[((row >> 4) * groups + group) * 16 + (row & 15)] = from[row * groups + group];
    }
    return to;
  };
  return {
    codes: new Uint8Array(words.buffer),
    scales: transpose(w.scales, new Float32Array(w.scales.length)),
    zeros: w.zeros === null ? null : transpose(w.zeros, new Uint8Array(w.zeros.length)),
  };
}
