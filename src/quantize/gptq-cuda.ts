import type { CudaDevice } from '../backend/cuda/cuda-device.ts';
import type { DevicePtr } from '../backend/cuda/driver-api.ts';
import { CHOLESKY_BLOCK, GPTQ_BLOCK, launchCholeskyDiagonal, launchDiagonal, launchGatherSymmetric, launchGptqBlock, launchIdentity, launchReverseTranspose } from '../backend/cuda/kernels/gptq.ts';
import { invalidArgument } from '../errors.ts';
import { columnOrder, type GptqOptions } from './gptq.ts';
import { emptyGroupQuantized, type GroupQuantized } from './group-quantizer.ts';

/**
 * gptqQuantize (gptq.ts, its CPU twin) on the device, in float32, for `hessian` H [cols, cols]
 * on the device (left as it is). The same steps, arranged for a GPU:
 *  - U, the upper Cholesky factor of H⁻¹ (H⁻¹ = UᵀU, H permuted and damped), comes from one
 *    Cholesky factorization and one triangular inverse: with J the reversal of the indices and
 *    J H J = L Lᵀ, H = V Vᵀ for V = J L J (upper), so H⁻¹ = V⁻ᵀ V⁻¹ and U = V⁻¹ = J L⁻¹ J. The
 *    factorization is blocked (a kernel per diagonal block, cuBLAS's trsm and syrk for the rest),
 *    the inverse cuBLAS's trsm of the identity.
 *  - The columns go in blocks (GPTQ's lazy batch updates): a kernel quantizes a block's columns
 *    one by one, compensating within it, and one GEMM then subtracts the whole block's errors
 *    from the columns after it (W[:, after] −= Err · U[block, after]). A group's grid is fitted
 *    from updated weights when its first column comes, so a group that runs past its block must
 *    begin one: `blockColumns` sizes blocks so that it does.
 */
export function gptqOnCuda(device: CudaDevice, w: Float64Array, rows: number, cols: number, hessian: DevicePtr, o: GptqOptions): GroupQuantized {
  const squareBytes = cols * cols * 4;
  const scratch: DevicePtr[] = [];
  const alloc = (bytes: number) => {
    const ptr = device.alloc(Math.max(bytes, 4));
    scratch.push(ptr);
    return ptr;
  };
  try {
    const diagonalPtr = alloc(cols * 4);
    launchDiagonal(device, hessian, 0, diagonalPtr, cols);
    const diagonal = new Float32Array(cols);
    device.download(diagonal, diagonalPtr);
    // A column no input reached is zeroed and its diagonal taken as 1, as on the CPU.
    const dead = diagonal.map((d) => (d === 0 ? 1 : 0));
    const fixed = Float64Array.from(diagonal, (d) => (d === 0 ? 1 : d));
    const order = columnOrder(fixed, o.actOrder);
    let meanDiagonal = 0;
    for (let i = 0; i < cols; i++) meanDiagonal += fixed[i] / cols;

    // A = J P H Pᵀ J, damped (P: the column order), factored in place: L, column-major.
    const reversed = Int32Array.from({ length: cols }, (_, i) => order[cols - 1 - i]);
    const index = alloc(cols * 4);
    device.uploadSync(index, reversed);
    const a = alloc(squareBytes);
    launchGatherSymmetric(device, a, hessian, index, cols);
    device.uploadSync(diagonalPtr, Float32Array.from(reversed, (c) => dead[c] + o.damp * meanDiagonal));
    launchDiagonal(device, a, diagonalPtr, 0, cols);
    choleskyInPlace(device, a, cols, alloc(4));

    // M = L⁻¹, then U = J M J (row-major, into a: L is spent).
    const m = alloc(squareBytes);
    launchIdentity(device, m, cols);
    device.cublas.solveLowerF32(false, a, cols, m, cols, cols, cols);
    launchReverseTranspose(device, a, m, cols);
    const u = a;

    const permuted = new Float32Array(rows * cols);
    for (let r = 0; r < rows; r++) {
      for (let i = 0; i < cols; i++) {
        const c = order[i];
        permuted[r * cols + i] = dead[c] === 1 ? 0 : w[r * cols + c];
      }
    }
    const wp = alloc(rows * cols * 4);
    device.uploadSync(wp, permuted);
    const size = o.groupSize ?? cols;
    const q = emptyGroupQuantized(rows, cols, o.bits, size);
    const groups = Math.ceil(cols / size);
    const codes = alloc(rows * cols);
    const scales = alloc(rows * groups * 4);
    const zeros = alloc(rows * groups);
    const orderPtr = alloc(cols * 4);
    device.uploadSync(orderPtr, order);
    const block = blockColumns(size, cols);
    const err = alloc(rows * block * 4);
    for (let start = 0; start < cols; start += block) {
      const count = Math.min(block, cols - start);
      launchGptqBlock(device, { u, w: wp, err, codes, scales, zeros, order: orderPtr, rows, cols, start, count, groupSize: size, bits: o.bits, symmetric: o.symmetric });
      const after = start + count;
      if (after < cols) device.cublas.subtractProductF32(wp + after * 4, cols, err, count, u + (start * cols + after) * 4, cols, rows, cols - after, count);
    }
    device.download(q.codes, codes);
    device.download(q.scales, scales);
    device.download(q.zeros, zeros);
    for (let i = 0; i < cols; i++) q.groupOf[order[i]] = Math.floor(i / size);
    return q;
  } finally {
    device.synchronize();
    for (const ptr of scratch) device.free(ptr);
  }
}

/**
 * Columns a GPTQ block takes: GPTQ_BLOCK when every group that begins inside a block ends in it
 * (the group size divides GPTQ_BLOCK) or there is one group a row; else the largest width that
 * divides both, so that every group begins a block.
 */
export function blockColumns(groupSize: number, cols: number): number {
  if (groupSize >= cols || GPTQ_BLOCK % groupSize === 0) return GPTQ_BLOCK;
  let [x, y] = [groupSize, GPTQ_BLOCK];
  while (y !== 0) [x, y] = [y, x % y];
  return x;
}

/**
 * Column-major a [n, n] (symmetric) ← its lower Cholesky factor L (a = L Lᵀ; above the diagonal
 * left as it was), right-looking by blocks of CHOLESKY_BLOCK: factor the diagonal block, solve
 * the panel under it, subtract the panel's Gram matrix from the rest.
 */
function choleskyInPlace(device: CudaDevice, a: DevicePtr, n: number, failed: DevicePtr): void {
  device.uploadSync(failed, new Int32Array(1));
  const at = (r: number, c: number) => a + (c * n + r) * 4;
  for (let k = 0; k < n; k += CHOLESKY_BLOCK) {
    const b = Math.min(CHOLESKY_BLOCK, n - k);
    launchCholeskyDiagonal(device, a, n, k, b, failed);
    const below = n - k - b;
    if (below === 0) break;
    device.cublas.solveLowerF32(true, at(k, k), n, at(k + b, k), n, below, b);
    device.cublas.subtractLowerGramF32(at(k + b, k + b), n, at(k + b, k), n, below, b);
  }
  const flag = new Int32Array(1);
  device.download(flag, failed);
  if (flag[0] !== 0) throw invalidArgument('GPTQ: the damped Hessian is not positive definite (raise the damping, or give more calibration text)');
}
