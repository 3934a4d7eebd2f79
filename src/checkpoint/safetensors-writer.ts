import { closeSync, openSync, writeSync } from 'node:fs';
import type { HostTensor } from '../tensor/host-tensor.ts';

/** A tensor as safetensors stores it: its dtype as the format spells it (BF16, F16, F32, I32...), shape and little-endian bytes. */
export interface SafetensorsTensor {
  dtype: string;
  shape: number[];
  data: Uint8Array;
}

/**
 * Writes a safetensors file (8-byte little-endian header length, JSON header padded with spaces to
 * a multiple of 8 as the reference writer pads it, then the tensors' bytes in the order given),
 * streaming each tensor to disk. `__metadata__` is written only when there is metadata.
 */
export function writeSafetensorsFile(path: string, tensors: ReadonlyMap<string, SafetensorsTensor>, metadata: Record<string, string> = {}): void {
  const header: Record<string, unknown> = Object.keys(metadata).length > 0 ? { __metadata__: metadata } : {};
  let offset = 0;
  for (const [name, t] of tensors) {
    const count = t.shape.reduce((n, d) => n * d, 1);
    if (t.data.byteLength % Math.max(1, count) !== 0) throw new Error(`writeSafetensorsFile: ${name} has ${t.data.byteLength} bytes for shape [${t.shape.join(', ')}]`);
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
  }
  const json = JSON.stringify(header);
  const headerBytes = new TextEncoder().encode(json.padEnd(Math.ceil(json.length / 8) * 8, ' '));
  const prefix = new Uint8Array(8);
  new DataView(prefix.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
  const fd = openSync(path, 'w');
  try {
    writeSync(fd, prefix);
    writeSync(fd, headerBytes);
    for (const t of tensors.values()) writeSync(fd, t.data);
  } finally {
    closeSync(fd);
  }
}

/** writeSafetensorsFile for host tensors (f32/f16/bf16), in the given order. */
export function writeSafetensors(path: string, tensors: Record<string, HostTensor>, metadata: Record<string, string> = {}): void {
  const entries = Object.entries(tensors).map(([name, t]): [string, SafetensorsTensor] => [name, { dtype: t.dtype.toUpperCase(), shape: t.shape, data: t.data }]);
  writeSafetensorsFile(path, new Map(entries), metadata);
}
