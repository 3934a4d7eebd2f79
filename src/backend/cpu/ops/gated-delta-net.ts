import type { DeltaRuleParams, NormGate } from '../../backend.ts';
import { deltaRuleDecays } from '../../shape-checks.ts';
import type { BatchDescription } from '../../../step/batch.ts';
import { recurrentState, sequenceRuns, slotStride, softplus, type LayerStateSlots } from './state-slots.ts';

// Reference ops of the state layers: the short causal convolution (Gated DeltaNet's and Mamba-2's)
// and the gated delta rule, each continuing from its part of the sequence's state slot.

/**
 * out = silu(depthwise causal conv of x + bias) per sequence, x and out [numTokens, channels], weight
 * [channels, kernel], bias [channels] or null: out[t, c] = silu(bias[c] + Σ_j weight[c, j] ·
 * input(t − (kernel − 1) + j, c)), where inputs
 * before the chunk come from the slot's conv state ([kernel − 1, channels], oldest first), which
 * then keeps the latest kernel − 1 inputs.
 */
export function causalConv1d(x: Float32Array, channels: number, weight: Float32Array, bias: Float32Array | null, kernel: number, batch: BatchDescription, slots: LayerStateSlots, out: Float32Array): void {
  const history = kernel - 1;
  if (slots.convElements !== history * channels) throw new Error(`causalConv1d: the layer's conv state holds ${slots.convElements} values, not ${history} inputs of ${channels} channels`);
  const stride = slotStride(slots);
  for (const { first, end, slot, fresh } of sequenceRuns(batch, 'causalConv1d', slots)) {
    const conv = slots.state.subarray(slot * stride, slot * stride + slots.convElements);
    if (fresh) conv.fill(0);
    // The chunk's inputs after the kept ones: input(i) for i in [-history, n).
    const n = end - first;
    const input = (i: number, c: number) => (i < 0 ? conv[(history + i) * channels + c] : x[(first + i) * channels + c]);
    for (let i = 0; i < n; i++) {
      for (let c = 0; c < channels; c++) {
        let sum = bias === null ? 0 : bias[c];
        for (let j = 0; j < kernel; j++) sum += weight[c * kernel + j] * input(i - history + j, c);
        out[(first + i) * channels + c] = sum / (1 + Math.exp(-sum));
      }
    }
    const kept = new Float32Array(history * channels);
    for (let r = 0; r < history; r++) for (let c = 0; c < channels; c++) kept[r * channels + c] = input(n - history + r, c);
    conv.set(kept);
  }
}

/** v · rsqrt(Σv² + 1e-6), as transformers' (and FLA's) l2norm. */
function l2Normalized(values: Float32Array, scale: number): Float32Array {
  let sum = 0;
  for (const v of values) sum += v * v;
  const inv = scale / Math.sqrt(sum + 1e-6);
  return values.map((v) => v * inv);
}

/**
 * The gated delta rule, token by token (`Backend.gatedDeltaRule` says what it computes): qkv
 * [numTokens, 2 · Hk · dk + Hv · dv], ba [numTokens, Hv + D] (D decays per token: Hv, or Hv · dk
 * with a decay per key channel), out [numTokens, Hv · dv]; each sequence's recurrent state
 * [Hv, dk, dv] lives in its slot after the conv state.
 */
export function gatedDeltaRule(qkv: Float32Array, ba: Float32Array, aLog: Float32Array, dtBias: Float32Array, batch: BatchDescription, slots: LayerStateSlots, params: DeltaRuleParams, out: Float32Array): void {
  const { numKeyHeads: hk, numValueHeads: hv, keyDim: dk, valueDim: dv } = params;
  if (slots.recurrentElements !== hv * dk * dv) throw new Error(`gatedDeltaRule: the layer's recurrent state holds ${slots.recurrentElements} values, not ${hv} heads of ${dk} × ${dv}`);
  const width = 2 * hk * dk + hv * dv;
  const gates = hv + deltaRuleDecays(params);
  // Decays per head: the head's one decay applies to every row of its state, or each row has its own.
  const headDecays = params.decay === 'keyChannel' ? dk : 1;
  const group = hv / hk;
  const scale = dk ** -0.5;
  const memory = new Float64Array(dv);
  const decay = new Float64Array(dk);
  for (const run of sequenceRuns(batch, 'gatedDeltaRule', slots)) {
    const recurrent = recurrentState(slots, run);
    const { first, end } = run;
    for (let t = first; t < end; t++) {
      for (let h = 0; h < hv; h++) {
        const kh = Math.floor(h / group);
        const row = t * width;
        const q = l2Normalized(qkv.subarray(row + kh * dk, row + (kh + 1) * dk), scale);
        const k = l2Normalized(qkv.subarray(row + (hk + kh) * dk, row + (hk + kh + 1) * dk), 1);
        const v = qkv.subarray(row + 2 * hk * dk + h * dv, row + 2 * hk * dk + (h + 1) * dv);
        const beta = 1 / (1 + Math.exp(-ba[t * gates + h]));
        for (let i = 0; i < dk; i++) {
          const at = h * headDecays + (headDecays === 1 ? 0 : i);
          decay[i] = Math.exp(-Math.exp(aLog[h]) * softplus(ba[t * gates + hv + at] + dtBias[at]));
        }
        // S [dk, dv]: decay it, read what it recalls for k, write back the β-weighted correction.
        const s = recurrent.subarray(h * dk * dv, (h + 1) * dk * dv);
        memory.fill(0);
        for (let i = 0; i < dk; i++) {
          for (let j = 0; j < dv; j++) {
            s[i * dv + j] *= decay[i];
            memory[j] += s[i * dv + j] * k[i];
          }
        }
        for (let j = 0; j < dv; j++) memory[j] = (v[j] - memory[j]) * beta;
        const o = out.subarray(t * hv * dv + h * dv, t * hv * dv + (h + 1) * dv);
        o.fill(0);
        for (let i = 0; i < dk; i++) {
          for (let j = 0; j < dv; j++) {
            s[i * dv + j] += k[i] * memory[j];
            o[j] += s[i * dv + j] * q[i];
          }
        }
      }
    }
  }
}

/** out = x / rms(x) · weight · act(gate) over each group of weight.length columns of x and gate [rows, cols], act silu or sigmoid. */
export function gatedRmsNorm(x: Float32Array, gate: Float32Array, weight: Float32Array, eps: number, activation: NormGate, out: Float32Array): void {
  const width = weight.length;
  for (let at = 0; at < x.length; at += width) {
    let sum = 0;
    for (let i = 0; i < width; i++) sum += x[at + i] * x[at + i];
    const inv = 1 / Math.sqrt(sum / width + eps);
    for (let i = 0; i < width; i++) {
      const z = gate[at + i];
      const sigmoid = 1 / (1 + Math.exp(-z));
      out[at + i] = x[at + i] * inv * weight[i] * (activation === 'silu' ? z * sigmoid : sigmoid);
    }
  }
}
