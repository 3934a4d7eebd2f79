import type { CudaDevice } from '../cuda-device.ts';
import type { DevicePtr } from '../driver-api.ts';
import type { KvCacheDtype } from '../../../step/kv-cache-layout.ts';
import { kvDtypeDefine } from './kv-quantize.ts';

export interface KeySummaryArgs {
  /** The layer's summary pool [numBlocks, numKvHeads, 2, headDim] bf16. */
  summaries: DevicePtr;
  /** The layer's key pool, after this step's keys were written to it. */
  kPool: DevicePtr;
  dtype: KvCacheDtype;
  /** int8: the key scales [slots, numKvHeads]; 0 otherwise. */
  kScales: DevicePtr;
  /** The slots written (a step's slot mapping, or copySlots' destinations). */
  slotMapping: DevicePtr;
  numTokens: number;
  blockSize: number;
  numKvHeads: number;
  headDim: number;
}

/** Recomputes the key summaries of every block `slotMapping` wrote keys to (key-summaries.cu). */
export function launchKeySummaries(device: CudaDevice, a: KeySummaryArgs): void {
  if (a.numTokens === 0) return;
  const kernel = device.kernel('key-summaries.cu', 'key_summary_kernel', 'ppppiiii', { KV_DTYPE: kvDtypeDefine(a.dtype) });
  device.launch(kernel, [a.numTokens, a.numKvHeads], [128], 0, [a.summaries, a.kPool, a.kScales, a.slotMapping, a.numTokens, a.blockSize, a.numKvHeads, a.headDim]);
}
