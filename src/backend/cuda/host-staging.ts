import koffi from 'koffi';
import type { CudaDriver, DevicePtr, Handle } from './driver-api.ts';

/**
 * Page-locked staging for small per-step uploads (batch index arrays, block pairs), so the copy
 * is truly asynchronous on the stream: a copy from pageable memory would make the host wait for
 * all queued work first. One upload is in flight at a time; the next waits on its event before
 * reusing the buffer.
 */
export class HostStaging {
  private readonly driver: CudaDriver;
  private readonly stream: Handle;
  private readonly done: Handle;
  private buffer: Handle | null = null;
  private capacity = 0;
  private pending = false;

  constructor(driver: CudaDriver, stream: Handle) {
    this.driver = driver;
    this.stream = stream;
    this.done = driver.createEvent();
  }

  /** Queues a copy of `data` to `dst` on the stream. */
  upload(dst: DevicePtr, data: Int32Array): void {
    if (data.length === 0) return;
    if (this.pending) this.driver.synchronizeEvent(this.done);
    this.pending = false;
    if (data.byteLength > this.capacity) {
      if (this.buffer !== null) this.driver.freeHost(this.buffer);
      this.capacity = Math.max(data.byteLength, 2 * this.capacity, 64 * 1024);
      this.buffer = this.driver.allocHost(this.capacity);
    }
    new Int32Array(koffi.view(this.buffer, data.byteLength)).set(data);
    this.driver.copyHtoDAsync(dst, this.buffer!, data.byteLength, this.stream);
    this.driver.recordEvent(this.done, this.stream);
    this.pending = true;
  }

  dispose(): void {
    if (this.pending) this.driver.synchronizeEvent(this.done);
    if (this.buffer !== null) this.driver.freeHost(this.buffer);
    this.driver.destroyEvent(this.done);
  }
}
