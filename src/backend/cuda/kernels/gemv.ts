import type { Activation } from '../../backend.ts';
import type { CudaDevice } from '../cuda-device.ts';
import type { DevicePtr } from '../driver-api.ts';
import { activationDefines } from './activation.ts';

/**
 * Most batch rows the GEMV kernel takes; larger batches are cuBLAS GEMMs. Measured on the H100 (8B
 * shapes): at 1 row the GEMV streams weights 5-15 % faster than cuBLAS; from 4 rows on, re-reading x
 * for every row makes it slower on the narrower matrices.
 */
export const GEMV_MAX_ROWS = 2;
const WARPS_PER_BLOCK = 4;
/**
 * Below this many output rows the warps of a block share a row, each summing a quarter of k: with a
 * warp per row, the 8B model's 4096- and 6144-row matrices read at 2.4-2.7 TB/s on the H100 (few
 * warps, each with a long chain of loads) while the 14336- and 128256-row ones reach 3.0-3.1.
 */
const SPLIT_BELOW_ROWS = 8192;

/**
 * out [rows, n] = x [rows, k] · w [n, k]^T (+ bias [n], or 0 for none) for 1 ≤ rows ≤ GEMV_MAX_ROWS;
 * k a multiple of 8. One kernel per row count, each weight load serving every row. `gated`: w is
 * [2n, k] (gate rows, then up rows) and out = act(x · gateᵀ) * (x · upᵀ) with that activation; no bias.
 * `float32`: out is f32, the sums and bias unrounded (not with `gated`).
 */
export function launchGemv(
  device: CudaDevice,
  out: DevicePtr,
  x: DevicePtr,
  w: DevicePtr,
  bias: DevicePtr,
  rows: number,
  n: number,
  k: number,
  options: { gated?: Activation; float32?: boolean } = {},
): void {
  if (!(rows >= 1 && rows <= GEMV_MAX_ROWS)) throw new RangeError(`launchGemv: ${rows} rows is outside [1, ${GEMV_MAX_ROWS}]`);
  const gated = options.gated;
  if (gated !== undefined && bias !== 0) throw new Error('launchGemv: the gated form takes no bias');
  const float32 = options.float32 ?? false;
  if (gated !== undefined && float32) throw new Error('launchGemv: the gated form writes bf16 only');
  const kSplit = n < SPLIT_BELOW_ROWS ? WARPS_PER_BLOCK : 1;
  const { ACT, alpha, limit } = gated === undefined ? { ACT: null, alpha: 0, limit: 0 } : activationDefines(gated);
  const defines = { ROWS: rows, GATED: ACT === null ? 0 : 1, KSPLIT: kSplit, OUT_F32: float32 ? 1 : 0, ...(ACT !== null && { ACT }) };
  const kernel = device.kernel('gemv.cu', 'gemv_kernel', 'ppppiiff', defines);
  device.launch(kernel, [Math.ceil((n * kSplit) / WARPS_PER_BLOCK)], [32 * WARPS_PER_BLOCK], 0, [out, x, w, bias, n, k / 8, alpha, limit]);
}
