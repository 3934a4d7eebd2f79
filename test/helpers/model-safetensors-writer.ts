import { writeFileSync } from 'node:fs';

export { writeSafetensors } from '../../src/checkpoint/safetensors-writer.ts';

/** Writes a header string and data section verbatim, so tests can build deliberately broken files. */
export function writeRawSafetensors(path: string, headerJson: string, data: Uint8Array, declaredHeaderBytes?: number): void {
  const padded = headerJson.padEnd(Math.ceil(headerJson.length / 8) * 8, ' ');
  const headerBytes = new TextEncoder().encode(padded);
  const prefix = new Uint8Array(8);
  new DataView(prefix.buffer).setBigUint64(0, BigInt(declaredHeaderBytes ?? headerBytes.length), true);
  writeFileSync(path, Buffer.concat([prefix, headerBytes, data]));
}
