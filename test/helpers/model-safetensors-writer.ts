import { writeFileSync } from 'node:fs';
import type { HostTensor } from '../../src/tensor/host-tensor.ts';

/** Writes a safetensors file from host tensors, in the given order, with the header padded to 8 bytes as the reference writer does. */
export function writeSafetensors(path: string, tensors: Record<string, HostTensor>, metadata?: Record<string, string>): void {
  const header: Record<string, unknown> = metadata ? { __metadata__: metadata } : {};
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    header[name] = { dtype: t.dtype.toUpperCase(), shape: t.shape, data_offsets: [offset, offset + t.data.length] };
    offset += t.data.length;
  }
  const data = new Uint8Array(offset);
  offset = 0;
  for (const t of Object.values(tensors)) {
    data.set(t.data, offset);
    offset += t.data.length;
  }
  writeRawSafetensors(path, JSON.stringify(header), data);
}

/** Writes a header string and data section verbatim, so tests can build deliberately broken files. */
export function writeRawSafetensors(path: string, headerJson: string, data: Uint8Array, declaredHeaderBytes?: number): void {
  const padded = headerJson.padEnd(Math.ceil(headerJson.length / 8) * 8, ' ');
  const headerBytes = new TextEncoder().encode(padded);
  const prefix = new Uint8Array(8);
  new DataView(prefix.buffer).setBigUint64(0, BigInt(declaredHeaderBytes ?? headerBytes.length), true);
  writeFileSync(path, Buffer.concat([prefix, headerBytes, data]));
}
