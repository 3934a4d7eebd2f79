import type { WeightStream } from '../backend.ts';

type Values = Float32Array | Uint8Array | Int32Array;

/** One array of a group's weights: its values, kept aside, and the shared buffer the group's tensors read. */
interface Piece {
  host: Values;
  device: Values;
}

/**
 * The CPU backend's weight stream: the same scheme as CUDA's with plain copies (the CPU's memory
 * is host memory already), so that the order of fetches and uses is tested. A group's tensors read
 * buffers shared by every group of its parity (piece by piece, by type and length), which hold
 * zeros until a group is fetched into them: a layer run before its fetch computes with another
 * layer's weights or none.
 */
export class CpuWeightStream implements WeightStream {
  hostBytes = 0;
  deviceBytes = 0;
  private readonly groups: Piece[][] = [];
  private readonly buffers = new Map<string, Values>();

  /** The shared buffer for `host`, the next array of group `group`'s weights; `host` is kept as its values. */
  place<T extends Values>(group: number, host: T): T {
    const pieces = (this.groups[group] ??= []);
    const key = `${group % 2}:${pieces.length}:${host.constructor.name}:${host.length}`;
    let device = this.buffers.get(key);
    if (device === undefined) {
      device = new (host.constructor as new (length: number) => T)(host.length);
      this.buffers.set(key, device);
      this.deviceBytes += host.byteLength;
    }
    pieces.push({ host, device });
    this.hostBytes += host.byteLength;
    return device as T;
  }

  fetch(group: number): void {
    for (const { host, device } of this.groups[group] ?? []) device.set(host);
  }
}

export function asCpuWeightStream(s: WeightStream): CpuWeightStream {
  if (!(s instanceof CpuWeightStream)) throw new Error('CpuBackend: weight stream is not from createWeightStream');
  return s;
}
