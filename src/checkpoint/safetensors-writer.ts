import { writeFileSync } from 'node:fs';
import type { HostTensor } from '../tensor/host-tensor.ts';

/** Writes a safetensors file from host tensors, in the given order, its header padded to 8 bytes as the reference writer pads it. */
export function writeSafetensors(path: string, tensors: Record<string, HostTensor>, metadata?: Record<string, string>): void {
  const header: Record<string, unknown> = metadata ? { __metadata__: metadata } : {};
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    header[name] = { dtype: t.dtype.toUpperCase(), shape: t.shape, data_offsets: [offset, offset + t.data.length] };
    offset += t.data.length;
  }
  const json = JSON.stringify(header);
  const headerBytes = new TextEncoder().encode(json.padEnd(Math.ceil(json.length / 8) * 8, ' '));
  const prefix = new Uint8Array(8);
  new DataView(prefix.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
  writeFileSync(path, Buffer.concat([prefix, headerBytes, ...Object.values(tensors).map((t) => t.data)]));
}
