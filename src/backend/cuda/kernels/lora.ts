import type { CudaDevice } from '../cuda-device.ts';
import type { DevicePtr } from '../driver-api.ts';

const SHRINK_TOKENS = 4;
const EXPAND_TOKENS = 8;
const THREADS = 128;
/** Most slices (stacked projections) a LoRA'd linear has: q/k/v. */
export const LORA_MAX_SLICES = 3;

export interface LoraLaunch {
  out: DevicePtr;
  x: DevicePtr;
  /** float32 scratch [numTokens, slices, rp]. */
  v: DevicePtr;
  a: DevicePtr;
  bt: DevicePtr;
  slots: DevicePtr;
  ranks: DevicePtr;
  numTokens: number;
  inDim: number;
  /** Where each slice's output rows end, the last at the linear's output width. */
  sliceEnds: readonly number[];
  /** Rank storage stride: the max rank rounded up to 8. */
  rp: number;
}

/** out [numTokens, outDim] += per token its adapter's (x · Aᵀ) · Bᵀ, slice by slice (lora.cu); inDim a multiple of 8. */
export function launchLora(device: CudaDevice, l: LoraLaunch): void {
  if (l.numTokens === 0) return;
  const slices = l.sliceEnds.length;
  if (slices < 1 || slices > LORA_MAX_SLICES) throw new RangeError(`launchLora: ${slices} slices is outside [1, ${LORA_MAX_SLICES}]`);
  const outDim = l.sliceEnds[slices - 1];
  const shrink = device.kernel('lora.cu', 'lora_shrink_kernel', 'pppppiiii');
  device.launch(shrink, [Math.ceil(l.numTokens / SHRINK_TOKENS), slices], [THREADS], 0, [l.v, l.x, l.a, l.slots, l.ranks, l.numTokens, l.inDim / 8, l.rp, slices]);
  const expand = device.kernel('lora.cu', 'lora_expand_kernel', 'pppppiiiiii');
  const end = (i: number) => l.sliceEnds[Math.min(i, slices - 1)];
  device.launch(expand, [Math.ceil(outDim / THREADS), Math.ceil(l.numTokens / EXPAND_TOKENS)], [THREADS], 0, [l.out, l.v, l.bt, l.slots, l.ranks, l.numTokens, outDim, l.rp, slices, end(0), end(1)]);
}
