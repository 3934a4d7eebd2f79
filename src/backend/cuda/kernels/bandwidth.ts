import type { CudaDevice } from '../cuda-device.ts';
import type { DevicePtr } from '../driver-api.ts';

const THREADS = 512;
// Every block resident at once (32 registers a thread: 2048 threads fit an SM), so no block is left
// for a second wave that would stretch the timing.
const BLOCKS_PER_SM = 4;

/** Reads `bytes` (a multiple of 4 KiB) of `src` once; `sink` is one writable 32-bit word. */
export function launchReadBandwidth(device: CudaDevice, src: DevicePtr, bytes: number, sink: DevicePtr): void {
  if (bytes % 4096 !== 0) throw new RangeError(`launchReadBandwidth: ${bytes} bytes is not a multiple of 4 KiB`);
  const blocks = device.info.multiprocessorCount * BLOCKS_PER_SM;
  // A fold that equals 0x7fffffff would also need the buffer's contents to conspire; the fill the
  // caller uses makes it 0.
  device.launch(device.kernel('bandwidth.cu', 'read_bandwidth_kernel', 'plpi'), [blocks], [THREADS], 0, [src, bytes / 16, sink, 0x7fffffff]);
}
