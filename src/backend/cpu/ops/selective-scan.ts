import type { SelectiveScanParams } from '../../backend.ts';
import type { BatchDescription } from '../../../step/batch.ts';
import { recurrentState, sequenceRuns, softplus, type LayerStateSlots } from './state-slots.ts';

/**
 * Mamba-2's selective scan, token by token (`Backend.selectiveScan` says what it computes), as
 * transformers' decode path (mamba2_selective_state_update) runs it; its prefill runs the chunked
 * form (SSD over chunks of `mamba_chunk_size`), equal in exact arithmetic. xbc [numTokens, H · P +
 * 2 · G · N], dt [numTokens, H], z and out [numTokens, H · P]; each sequence's state [H, P, N]
 * lives in its slot after the conv state.
 */
export function selectiveScan(xbc: Float32Array, dt: Float32Array, z: Float32Array, aLog: Float32Array, dtBias: Float32Array, d: Float32Array, batch: BatchDescription, slots: LayerStateSlots, params: SelectiveScanParams, out: Float32Array): void {
  const { numHeads: heads, headDim: p, numGroups: groups, stateSize: n, dtMin, dtMax } = params;
  if (slots.recurrentElements !== heads * p * n) throw new Error(`selectiveScan: the layer's recurrent state holds ${slots.recurrentElements} values, not ${heads} heads of ${p} × ${n}`);
  const width = heads * p + 2 * groups * n;
  const headsPerGroup = heads / groups;
  for (const run of sequenceRuns(batch, 'selectiveScan', slots)) {
    const state = recurrentState(slots, run);
    for (let t = run.first; t < run.end; t++) {
      const row = t * width;
      for (let h = 0; h < heads; h++) {
        const delta = Math.min(dtMax, Math.max(dtMin, softplus(dt[t * heads + h] + dtBias[h])));
        const decay = Math.exp(-Math.exp(aLog[h]) * delta);
        const g = Math.floor(h / headsPerGroup);
        const b = xbc.subarray(row + heads * p + g * n, row + heads * p + (g + 1) * n);
        const c = xbc.subarray(row + heads * p + (groups + g) * n, row + heads * p + (groups + g + 1) * n);
        for (let i = 0; i < p; i++) {
          const x = xbc[row + h * p + i];
          // S[h, i, :] decays, takes Δ · x · B, and is read by C.
          const s = state.subarray((h * p + i) * n, (h * p + i + 1) * n);
          let y = 0;
          for (let k = 0; k < n; k++) {
            s[k] = s[k] * decay + delta * b[k] * x;
            y += s[k] * c[k];
          }
          y += d[h] * x;
          const gate = z[t * heads * p + h * p + i];
          out[t * heads * p + h * p + i] = (y * gate) / (1 + Math.exp(-gate));
        }
      }
    }
  }
}
