import type { CudaDevice } from '../cuda-device.ts';
import type { DevicePtr } from '../driver-api.ts';

/**
 * Copies block src[i] to dst[i] in each of `numPools` consecutive pools of `poolBytes` starting
 * at `pools` (a run of the cache's pools with one block size).
 */
export function launchCopyBlocks(
  device: CudaDevice,
  pools: DevicePtr,
  numPools: number,
  poolBytes: number,
  blockBytes: number,
  src: DevicePtr,
  dst: DevicePtr,
  numPairs: number,
): void {
  if (numPairs === 0) return;
  const kernel = device.kernel('copy-blocks.cu', 'copy_blocks_kernel', 'pppli');
  device.launch(kernel, [numPairs, numPools], [256], 0, [pools, src, dst, poolBytes / 16, blockBytes / 16]);
}

/**
 * Copies slot src[i] to dst[i], pairs in order, in each of `numPools` consecutive pools of
 * `poolBytes` starting at `pools` whose slots are `slotBytes` (a multiple of 4) wide.
 */
export function launchCopySlots(
  device: CudaDevice,
  pools: DevicePtr,
  numPools: number,
  poolBytes: number,
  slotBytes: number,
  src: DevicePtr,
  dst: DevicePtr,
  numPairs: number,
): void {
  if (numPairs === 0) return;
  const kernel = device.kernel('copy-blocks.cu', 'copy_slots_kernel', 'pppili');
  const slotWords = slotBytes / 4;
  device.launch(kernel, [Math.ceil(slotWords / 256), numPools], [256], 0, [pools, src, dst, numPairs, poolBytes / 4, slotWords]);
}
