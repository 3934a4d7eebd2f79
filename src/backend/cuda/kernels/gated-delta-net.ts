import type { DeltaRuleParams, NormGate } from '../../backend.ts';
import type { CudaDevice } from '../cuda-device.ts';
import type { DevicePtr } from '../driver-api.ts';

/** The conv's largest kernel (MAX_CONV_KERNEL in gated-delta-net.cu): Qwen3-Next, Qwen3.5 and Granite 4.0 use 4. */
export const MAX_CONV_KERNEL = 8;

const THREADS = 128;

/** Where a step's state layer keeps its slots and which slot each sequence reads (BatchDescription.stateSlots). */
export interface StateSlotArgs {
  state: DevicePtr;
  /** float32 values per slot: the conv state, then the recurrent state. */
  slotStride: number;
  queryStartLoc: DevicePtr;
  seqLens: DevicePtr;
  stateSlots: DevicePtr;
  numSeqs: number;
}

/** out = silu(causal depthwise conv of x + bias) [tokens, channels], weight [channels, kernel], bias [channels] or null, continuing from each slot's conv state. */
export function launchCausalConv1d(device: CudaDevice, out: DevicePtr, x: DevicePtr, weight: DevicePtr, bias: DevicePtr | null, slots: StateSlotArgs, channels: number, kernel: number): void {
  if (slots.numSeqs === 0) return;
  if (kernel > MAX_CONV_KERNEL) throw new Error(`causalConv1d: a kernel of ${kernel} exceeds the CUDA kernel's ${MAX_CONV_KERNEL}`);
  device.launch(device.kernel('gated-delta-net.cu', 'causal_conv1d_kernel', 'ppppppppiii'), [slots.numSeqs, Math.ceil(channels / THREADS)], [THREADS], 0, [
    out,
    x,
    weight,
    bias ?? 0,
    slots.state,
    slots.queryStartLoc,
    slots.seqLens,
    slots.stateSlots,
    slots.slotStride,
    channels,
    kernel,
  ]);
}

export interface DeltaRuleShape extends DeltaRuleParams {
  convElements: number;
}

/** The decay's float32 constants: aLog [Hv], dtBias [Hv] or [Hv · dk] (a decay per key channel). */
export interface DeltaRuleDecays {
  aLog: DevicePtr;
  dtBias: DevicePtr;
}

/** The gated delta rule over each sequence's chunk from its slot's recurrent state: out [tokens, Hv · dv]. */
export function launchGatedDeltaRule(device: CudaDevice, out: DevicePtr, qkv: DevicePtr, ba: DevicePtr, decays: DeltaRuleDecays, slots: StateSlotArgs, shape: DeltaRuleShape): void {
  if (slots.numSeqs === 0) return;
  const threads = Math.ceil(shape.valueDim / 32) * 32;
  if (threads > 1024) throw new Error(`gatedDeltaRule: a value head of ${shape.valueDim} exceeds one block of 1024 threads`);
  const kernel = device.kernel('gated-delta-net.cu', 'gated_delta_rule_kernel', 'pppppppppiiiiiii');
  // Shared memory: the token's q, k and the decay of each row of the head's state.
  device.launch(kernel, [slots.numSeqs, shape.numValueHeads], [threads], 3 * shape.keyDim * 4, [
    out,
    qkv,
    ba,
    decays.aLog,
    decays.dtBias,
    slots.state,
    slots.queryStartLoc,
    slots.seqLens,
    slots.stateSlots,
    slots.slotStride,
    shape.convElements,
    shape.numKeyHeads,
    shape.numValueHeads,
    shape.keyDim,
    shape.valueDim,
    shape.decay === 'keyChannel' ? shape.keyDim : 1,
  ]);
}

/** out = x / rms(x) · weight · act(gate) per group of `width` columns, act silu or sigmoid; `groups` = rows × groups per row. */
export function launchGatedRmsNorm(device: CudaDevice, out: DevicePtr, x: DevicePtr, gate: DevicePtr, weight: DevicePtr, groups: number, width: number, eps: number, activation: NormGate): void {
  if (groups === 0) return;
  const threads = Math.min(1024, Math.max(32, Math.ceil(width / 32) * 32));
  const sigmoidGate = activation === 'sigmoid' ? 1 : 0;
  device.launch(device.kernel('gated-delta-net.cu', 'gated_rms_norm_kernel', 'ppppifi'), [groups], [threads], 0, [out, x, gate, weight, width, eps, sigmoidGate]);
}

