import koffi from 'koffi';
import { READABLE_SAMPLING_PASSES } from '../backend.ts';
import type { CudaDriver, DevicePtr, Handle } from './driver-api.ts';

/** A page-locked buffer and the event recorded after the last copy that used it. */
interface PinnedSlot {
  buffer: Handle | null;
  capacity: number;
  done: Handle;
  busy: boolean;
}

/**
 * Page-locked buffers taken in turn, so that copies are truly asynchronous on the stream (a copy
 * from pageable memory makes the host wait for all queued work first) and several can be queued:
 * a step's uploads are queued while the previous step still runs. A slot is reused only once the
 * copy that last used it has run.
 */
class PinnedRing {
  private readonly driver: CudaDriver;
  private readonly slots: PinnedSlot[];
  private next = 0;

  constructor(driver: CudaDriver, numSlots: number) {
    this.driver = driver;
    this.slots = Array.from({ length: numSlots }, () => ({ buffer: null, capacity: 0, done: driver.createEvent(), busy: false }));
  }

  /** The next slot, at least `bytes` large, once its last copy has run. */
  take(bytes: number): PinnedSlot {
    const slot = this.slots[this.next];
    this.next = (this.next + 1) % this.slots.length;
    if (slot.busy) this.driver.synchronizeEvent(slot.done);
    slot.busy = false;
    if (bytes > slot.capacity) {
      if (slot.buffer !== null) this.driver.freeHost(slot.buffer);
      slot.capacity = Math.max(bytes, 2 * slot.capacity, 64 * 1024);
      slot.buffer = this.driver.allocHost(slot.capacity);
    }
    return slot;
  }

  /** Marks the slot used by the copy just queued on `stream`. */
  queued(slot: PinnedSlot, stream: Handle): void {
    this.driver.recordEvent(slot.done, stream);
    slot.busy = true;
  }

  dispose(): void {
    for (const slot of this.slots) {
      if (slot.busy) this.driver.synchronizeEvent(slot.done);
      if (slot.buffer !== null) this.driver.freeHost(slot.buffer);
      this.driver.destroyEvent(slot.done);
    }
  }
}

/** Int32 ids copied from the device; `read()` waits for the copy. */
export interface PendingDownload {
  read(): Int32Array;
}

/**
 * Stream-ordered copies through page-locked memory for per-step data: uploads of batch index
 * arrays and sampling parameters, downloads of sampled token ids.
 */
export class HostStaging {
  private readonly driver: CudaDriver;
  private readonly stream: Handle;
  private readonly uploads: PinnedRing;
  private readonly downloads: PinnedRing;
  /** Bumped per download: a download whose slot was taken again can no longer be read. */
  private readonly downloadSerial: number[] = [];
  private downloadsQueued = 0;

  constructor(driver: CudaDriver, stream: Handle) {
    this.driver = driver;
    this.stream = stream;
    // A step queues up to three uploads (block copies, batch arrays, sampling parameters) while
    // the previous step's may still wait to run; the latest READABLE_SAMPLING_PASSES downloads are readable.
    this.uploads = new PinnedRing(driver, 8);
    this.downloads = new PinnedRing(driver, READABLE_SAMPLING_PASSES);
  }

  /** Queues a copy of `data` to `dst` on the stream. */
  upload(dst: DevicePtr, data: Int32Array): void {
    if (data.length === 0) return;
    const slot = this.uploads.take(data.byteLength);
    new Int32Array(koffi.view(slot.buffer!, data.byteLength)).set(data);
    this.driver.copyHtoDAsync(dst, slot.buffer!, data.byteLength, this.stream);
    this.uploads.queued(slot, this.stream);
  }

  /** Queues a copy of `count` int32 from `src`; the READABLE_SAMPLING_PASSES latest downloads stay readable. */
  download(src: DevicePtr, count: number): PendingDownload {
    if (count === 0) return { read: () => new Int32Array(0) };
    const serial = this.downloadsQueued++;
    const slot = this.downloads.take(count * 4);
    const view = new Int32Array(koffi.view(slot.buffer!, count * 4));
    this.driver.copyDtoHAsync(view, src, count * 4, this.stream);
    this.downloads.queued(slot, this.stream);
    const slotIndex = serial % READABLE_SAMPLING_PASSES;
    this.downloadSerial[slotIndex] = serial;
    return {
      read: () => {
        if (this.downloadSerial[slotIndex] !== serial) throw new Error('HostStaging: a download was read after its buffer was reused');
        this.driver.synchronizeEvent(slot.done);
        return view.slice();
      },
    };
  }

  dispose(): void {
    this.uploads.dispose();
    this.downloads.dispose();
  }
}

