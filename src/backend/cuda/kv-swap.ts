import type { SwapSpace } from '../backend.ts';
import type { KvCacheLayout } from '../../step/kv-cache-layout.ts';
import type { CudaDevice } from './cuda-device.ts';
import { CudaKvCache } from './cuda-tensor.ts';
import type { Handle } from './driver-api.ts';

/**
 * Pinned host memory laid out as a CudaKvCache of `layout.numBlocks` blocks (every pool one after
 * another), so that a block of any pool is one contiguous copy away from its device twin.
 */
export class CudaSwapSpace implements SwapSpace {
  readonly layout: KvCacheLayout;
  /** Host address of the allocation; pool offsets and block sizes as in `shape`. */
  readonly address: number;
  readonly shape: CudaKvCache;

  constructor(layout: KvCacheLayout, address: number) {
    this.layout = layout;
    this.address = address;
    this.shape = new CudaKvCache(layout, 0);
  }
}

/**
 * Swaps on a transfer stream of their own. A swap-out waits (on the device) for the compute
 * stream's work queued so far, which may still write the blocks it reads, and the compute stream
 * then waits for it, since the next step may reuse those device blocks. A swap-in also waits for
 * the compute queued so far (its destination blocks may have been freed by work still running),
 * but the compute queued after it does not wait: the scheduler runs a swapped-in sequence from the
 * step after, so the copies overlap a step's forward, and `awaitSwapIns` orders the next one after
 * them. The host never waits for a swap.
 */
export class KvSwapper {
  private readonly device: CudaDevice;
  private readonly stream: Handle;
  /** Recorded on the compute stream before each swap; on the transfer stream after it. */
  private readonly computeMark: Handle;
  private readonly transferMark: Handle;
  private swapInsUnawaited = false;

  constructor(device: CudaDevice) {
    this.device = device;
    this.stream = device.driver.createStream();
    this.computeMark = device.driver.createEvent(false);
    this.transferMark = device.driver.createEvent(false);
  }

  swapOut(cache: CudaKvCache, swap: CudaSwapSpace, src: Int32Array, dst: Int32Array): void {
    if (src.length === 0) return;
    this.afterCompute();
    this.copyRuns(cache, swap, src, dst, (pool, device, host, bytes) => {
      this.device.driver.copyDtoHAsyncToAddress(swap.address + swap.shape.pools[pool].offset + host, cache.base + cache.pools[pool].offset + device, bytes, this.stream);
    });
    this.device.driver.recordEvent(this.transferMark, this.stream);
    this.device.driver.streamWaitEvent(this.device.stream, this.transferMark);
  }

  swapIn(cache: CudaKvCache, swap: CudaSwapSpace, src: Int32Array, dst: Int32Array): void {
    if (src.length === 0) return;
    this.afterCompute();
    this.copyRuns(cache, swap, dst, src, (pool, device, host, bytes) => {
      this.device.driver.copyHtoDAsyncFromAddress(cache.base + cache.pools[pool].offset + device, swap.address + swap.shape.pools[pool].offset + host, bytes, this.stream);
    });
    this.device.driver.recordEvent(this.transferMark, this.stream);
    this.swapInsUnawaited = true;
  }

  /** The transfer stream is first in, first out: waiting for its latest mark waits for every swap-in before it. */
  awaitSwapIns(): void {
    if (!this.swapInsUnawaited) return;
    this.device.driver.streamWaitEvent(this.device.stream, this.transferMark);
    this.swapInsUnawaited = false;
  }

  dispose(): void {
    this.device.driver.synchronizeStream(this.stream);
    this.device.driver.destroyEvent(this.computeMark);
    this.device.driver.destroyEvent(this.transferMark);
    this.device.driver.destroyStream(this.stream);
  }

  private afterCompute(): void {
    this.device.driver.recordEvent(this.computeMark, this.device.stream);
    this.device.driver.streamWaitEvent(this.stream, this.computeMark);
  }

  /**
   * Calls `copy` once per pool and run of pairs whose device blocks and host blocks both ascend by
   * one (a sequence's blocks often do, and a fresh swap space hands out consecutive ones), with
   * byte offsets inside the pool.
   */
  private copyRuns(cache: CudaKvCache, swap: CudaSwapSpace, device: Int32Array, host: Int32Array, copy: (pool: number, device: number, host: number, bytes: number) => void): void {
    for (let start = 0; start < device.length; ) {
      let end = start + 1;
      while (end < device.length && device[end] === device[end - 1] + 1 && host[end] === host[end - 1] + 1) end++;
      cache.pools.forEach(({ blockBytes }, pool) => {
        if (swap.shape.pools[pool].blockBytes !== blockBytes) throw new Error(`swap: pool ${pool} has blocks of ${blockBytes} bytes on the device, ${swap.shape.pools[pool].blockBytes} on the host`);
        copy(pool, device[start] * blockBytes, host[start] * blockBytes, (end - start) * blockBytes);
      });
      start = end;
    }
  }
}
