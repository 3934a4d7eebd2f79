import { invalidModel } from '../../errors.ts';
import { hostTensorToFloat32 } from '../../tensor/host-dtype.ts';
import { hasZeroPoint, numGroups, symmetricZero, type QuantizedWeight } from '../../tensor/quantized-weight.ts';
import type { Checkpoint } from '../checkpoint.ts';

/*
 * Reading the tensors of quantized checkpoints: packed 32-bit words, index lists, scales of any
 * float dtype, each checked against the shape the layer's other tensors imply.
 */

/** A tensor's bytes as 32-bit words (I32 or U32), checked to have `shape`. */
export function readWords(ckpt: Checkpoint, name: string, shape: number[]): Uint32Array {
  const t = ckpt.readRaw(name);
  if (t.dtype !== 'I32' && t.dtype !== 'U32') throw invalidModel(`${ckpt.dir}: tensor "${name}" is ${t.dtype}, expected packed I32 words`);
  checkShape(ckpt, name, t.shape, shape);
  const bytes = t.data.byteOffset % 4 === 0 ? t.data : t.data.slice();
  return new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4);
}

/** An integer tensor (I32 or I64, g_idx and weight_shape) as numbers. */
export function readIndices(ckpt: Checkpoint, name: string): { shape: number[]; values: number[] } {
  const t = ckpt.readRaw(name);
  const bytes = t.data.slice();
  if (t.dtype === 'I32') return { shape: t.shape, values: [...new Int32Array(bytes.buffer)] };
  if (t.dtype === 'I64') return { shape: t.shape, values: [...new BigInt64Array(bytes.buffer)].map(Number) };
  throw invalidModel(`${ckpt.dir}: tensor "${name}" is ${t.dtype}, expected I32 or I64 indices`);
}

/** A float tensor (F32, F16 or BF16) as float32, checked to have `shape` (any shape of the same count when `shape` is null). */
export function readFloats(ckpt: Checkpoint, name: string, shape: number[] | null): Float32Array {
  const t = ckpt.read(name);
  if (shape !== null) checkShape(ckpt, name, t.shape, shape);
  return hostTensorToFloat32(t);
}

export function checkShape(ckpt: Checkpoint, name: string, actual: readonly number[], expected: readonly number[]): void {
  if (actual.length !== expected.length || actual.some((d, i) => d !== expected[i])) {
    throw invalidModel(`${ckpt.dir}: tensor "${name}" has shape [${actual.join(', ')}], expected [${expected.join(', ')}]`);
  }
}

/** Field `index` of `bits`-bit fields packed from bit 0 up in a 32-bit word. */
export function unpackField(word: number, index: number, bits: number): number {
  return (word >>> (index * bits)) & ((1 << bits) - 1);
}

/**
 * The stored column order of an act-order layer: input columns sorted by their group (`g_idx`,
 * stable), so each group's columns become contiguous, as Keel's layout wants. Null when g_idx
 * is the plain `column / groupSize` (no reordering). Checks that every group then holds
 * `groupSize` columns (the last one the rest).
 */
export function permutationFromGroupIndex(gIdx: readonly number[], groupSize: number, where: string): Int32Array | null {
  const cols = gIdx.length;
  const groups = Math.ceil(cols / groupSize);
  if (gIdx.every((g, i) => g === Math.floor(i / groupSize))) return null;
  const counts = new Array<number>(groups).fill(0);
  for (const g of gIdx) {
    if (!(Number.isInteger(g) && g >= 0 && g < groups)) throw invalidModel(`${where}: g_idx holds group ${g}, outside [0, ${groups})`);
    counts[g]++;
  }
  counts.forEach((n, g) => {
    const expected = Math.min(groupSize, cols - g * groupSize);
    if (n !== expected) throw invalidModel(`${where}: g_idx puts ${n} columns in group ${g}, expected ${expected}`);
  });
  const perm = Int32Array.from({ length: cols }, (_, i) => i);
  perm.sort((a, b) => gIdx[a] - gIdx[b] || a - b);
  return perm;
}

/** Drops a weight's zero codes when every one is the symmetric zero (the kernels then skip reading them). */
export function withoutSymmetricZeros(w: QuantizedWeight): QuantizedWeight {
  if (w.zeros === null || !hasZeroPoint(w.format)) return w;
  const zero = symmetricZero(w.format);
  return w.zeros.every((z) => z === zero) ? { ...w, zeros: null } : w;
}

/** Scale groups of `w`, checked against the `count` a checkpoint's scale tensor holds per row. */
export function checkGroupCount(w: QuantizedWeight, count: number, where: string): void {
  if (numGroups(w) !== count) throw invalidModel(`${where}: ${count} scale groups per row, but ${w.cols} columns in groups of ${w.groupSize} make ${numGroups(w)}`);
}
