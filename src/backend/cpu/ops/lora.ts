import type { LoraShape, LoraWeights } from '../../backend.ts';

/**
 * LoRA weights of one linear layer on the CPU, laid out as the CUDA backend lays them out:
 * a [slots, slices, maxRank, in] (each slice's A in its first `rank` rows), b [slots, out, maxRank]
 * (each output row's B in its first `rank` columns, the scale folded in), zeros elsewhere.
 */
export class CpuLoraWeights implements LoraWeights {
  readonly shape: LoraShape;
  readonly a: Float32Array;
  readonly b: Float32Array;
  /** Each slot's rank (0 for an empty slot). */
  readonly ranks: Int32Array;

  constructor(shape: LoraShape) {
    this.shape = shape;
    const out = shape.sliceRows.reduce((a, b) => a + b, 0);
    this.a = new Float32Array(shape.slots * shape.sliceRows.length * shape.maxRank * shape.inFeatures);
    this.b = new Float32Array(shape.slots * out * shape.maxRank);
    this.ranks = new Int32Array(shape.slots);
  }
}

/**
 * out [rows, Σ slice rows] += per row t with slot s = slots[t] ≥ 0, per slice: (x[t] · A_sᵀ) · B_sᵀ
 * into the slice's output columns. The shrink is summed in float64 and kept in float32 (the CUDA
 * kernel's float32 intermediate), the expand summed in float64 and added to the float32 output.
 */
export function addLoraRows(out: Float32Array, x: Float32Array, rows: number, w: CpuLoraWeights, slots: Int32Array): void {
  const { maxRank: R, inFeatures: inDim, sliceRows } = w.shape;
  const S = sliceRows.length;
  const outDim = sliceRows.reduce((a, b) => a + b, 0);
  const v = new Float32Array(R);
  for (let t = 0; t < rows; t++) {
    const slot = slots[t];
    if (slot < 0) continue;
    const rank = w.ranks[slot];
    let first = 0;
    for (let s = 0; s < S; s++) {
      for (let k = 0; k < rank; k++) {
        const aAt = ((slot * S + s) * R + k) * inDim;
        let sum = 0;
        for (let i = 0; i < inDim; i++) sum += x[t * inDim + i] * w.a[aAt + i];
        v[k] = sum;
      }
      for (let o = first; o < first + sliceRows[s]; o++) {
        const bAt = (slot * outDim + o) * R;
        let sum = 0;
        for (let k = 0; k < rank; k++) sum += v[k] * w.b[bAt + k];
        out[t * outDim + o] += sum;
      }
      first += sliceRows[s];
    }
  }
}
