import type { WeightStream } from '../backend.ts';
import type { CudaDevice } from './cuda-device.ts';
import type { DevicePtr, Handle } from './driver-api.ts';

/** One device allocation of a group's weights: where its values wait in pinned host memory, and the device buffer they are copied into. */
interface Piece {
  /** Address of the pinned copy; 0 until the piece is loaded. */
  host: number;
  device: DevicePtr;
  bytes: number;
}

/**
 * Weights in pinned host memory, copied into device buffers on a stream of their own before use.
 * A group's tensors are loaded as usual into device buffers shared by the groups of its parity
 * (piece by piece, by size), then copied to pinned memory. A fetch waits (on the device) for the
 * compute queued before it, which may still read the buffers' previous group, and `await` makes
 * the compute queued after it wait for the group's latest fetch; the host never waits. Two groups
 * are on the device at once: one being read, the next being copied.
 */
export class CudaWeightStream implements WeightStream {
  hostBytes = 0;
  deviceBytes = 0;
  private readonly device: CudaDevice;
  private readonly alloc: (bytes: number) => DevicePtr;
  private readonly groups: Piece[][] = [];
  private readonly buffers = new Map<string, DevicePtr>();
  private readonly stream: Handle;
  private readonly computeMark: Handle;
  /** Recorded on the copy stream after the latest fetch of a group of each parity. */
  private readonly fetched: [Handle, Handle];

  /** `alloc` gives device memory that lives as long as the backend (its owned allocations). */
  constructor(device: CudaDevice, alloc: (bytes: number) => DevicePtr) {
    this.device = device;
    this.alloc = alloc;
    this.stream = device.driver.createStream();
    this.computeMark = device.driver.createEvent(false);
    this.fetched = [device.driver.createEvent(false), device.driver.createEvent(false)];
  }

  /** The device buffer for the next allocation of group `group`'s weights, of `bytes` bytes. */
  buffer(group: number, bytes: number): DevicePtr {
    const pieces = (this.groups[group] ??= []);
    const key = `${group % 2}:${pieces.length}:${bytes}`;
    let device = this.buffers.get(key);
    if (device === undefined) {
      device = this.alloc(bytes);
      this.buffers.set(key, device);
      this.deviceBytes += bytes;
    }
    pieces.push({ host: 0, device, bytes });
    return device;
  }

  /** Copies the pieces of `group` loaded since the last call from their device buffers into pinned memory. */
  keep(group: number): void {
    const driver = this.device.driver;
    for (const piece of this.groups[group] ?? []) {
      if (piece.host !== 0) continue;
      piece.host = driver.allocHostAddress(piece.bytes);
      driver.copyDtoHAsyncToAddress(piece.host, piece.device, piece.bytes, this.device.stream);
      this.hostBytes += piece.bytes;
    }
    this.device.synchronize();
  }

  fetch(group: number): void {
    const pieces = this.groups[group];
    if (pieces === undefined) return;
    const driver = this.device.driver;
    driver.recordEvent(this.computeMark, this.device.stream);
    driver.streamWaitEvent(this.stream, this.computeMark);
    for (const { host, device, bytes } of pieces) driver.copyHtoDAsyncFromAddress(device, host, bytes, this.stream);
    driver.recordEvent(this.fetched[group % 2], this.stream);
  }

  await(group: number): void {
    if (this.groups[group] === undefined) return;
    this.device.driver.streamWaitEvent(this.device.stream, this.fetched[group % 2]);
  }

  /** Frees the pinned memory and the stream; the device buffers are the backend's to free. */
  dispose(): void {
    const driver = this.device.driver;
    driver.synchronizeStream(this.stream);
    for (const pieces of this.groups) for (const { host } of pieces ?? []) if (host !== 0) driver.freeHostAddress(host);
    driver.destroyEvent(this.computeMark);
    for (const event of this.fetched) driver.destroyEvent(event);
    driver.destroyStream(this.stream);
  }
}
