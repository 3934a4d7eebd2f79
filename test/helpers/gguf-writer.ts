import { writeFileSync } from 'node:fs';
import { VALUE_TYPES, type GgufValueType } from '../../src/checkpoint/gguf/metadata.ts';

/**
 * A GGUF writer for tests: metadata of every value type (nested arrays too) and tensors of raw
 * bytes, laid out as the format says (version 3 by default, little-endian, each tensor at a
 * multiple of the alignment). `tensorInfo` overrides let fuzz tests write what no valid file holds.
 */
type Scalar = number | bigint | boolean | string;
export type KvValue = { type: Exclude<GgufValueType, 'array'>; value: Scalar } | KvArray;
interface KvArray {
  type: 'array';
  elementType: GgufValueType;
  items: Scalar[] | KvArray[];
}

export interface GgufTensorSpec {
  name: string;
  /** ggml dims, innermost first. */
  dims: number[];
  typeId: number;
  data: Uint8Array;
  /** Written instead of the computed data offset. */
  offset?: bigint;
}

export interface GgufWriteOptions {
  version?: number;
  alignment?: number;
  /** Written instead of the true counts. */
  tensorCount?: bigint;
  kvCount?: bigint;
}

export const u32 = (value: number): KvValue => ({ type: 'uint32', value });
export const i32 = (value: number): KvValue => ({ type: 'int32', value });
export const f32 = (value: number): KvValue => ({ type: 'float32', value });
export const bool = (value: boolean): KvValue => ({ type: 'bool', value });
export const str = (value: string): KvValue => ({ type: 'string', value });
export const strings = (items: string[]): KvValue => ({ type: 'array', elementType: 'string', items });
export const f32s = (items: number[]): KvValue => ({ type: 'array', elementType: 'float32', items });
export const i32s = (items: number[]): KvValue => ({ type: 'array', elementType: 'int32', items });

class Bytes {
  private chunks: Uint8Array[] = [];
  length = 0;

  push(bytes: Uint8Array): void {
    this.chunks.push(bytes);
    this.length += bytes.length;
  }

  scalar(size: number, set: (view: DataView) => void): void {
    const bytes = new Uint8Array(size);
    set(new DataView(bytes.buffer));
    this.push(bytes);
  }

  u32(v: number): void {
    this.scalar(4, (d) => d.setUint32(0, v, true));
  }

  u64(v: bigint | number): void {
    this.scalar(8, (d) => d.setBigUint64(0, BigInt(v), true));
  }

  string(s: string): void {
    const bytes = new TextEncoder().encode(s);
    this.u64(bytes.length);
    this.push(bytes);
  }

  value(type: GgufValueType, v: unknown): void {
    switch (type) {
      case 'uint8': return this.scalar(1, (d) => d.setUint8(0, v as number));
      case 'int8': return this.scalar(1, (d) => d.setInt8(0, v as number));
      case 'uint16': return this.scalar(2, (d) => d.setUint16(0, v as number, true));
      case 'int16': return this.scalar(2, (d) => d.setInt16(0, v as number, true));
      case 'uint32': return this.u32(v as number);
      case 'int32': return this.scalar(4, (d) => d.setInt32(0, v as number, true));
      case 'float32': return this.scalar(4, (d) => d.setFloat32(0, v as number, true));
      case 'float64': return this.scalar(8, (d) => d.setFloat64(0, v as number, true));
      case 'uint64': return this.u64(v as bigint | number);
      case 'int64': return this.scalar(8, (d) => d.setBigInt64(0, BigInt(v as number | bigint), true));
      case 'bool': return this.scalar(1, (d) => d.setUint8(0, v ? 1 : 0));
      case 'string': return this.string(v as string);
      case 'array': {
        const array = v as KvArray;
        this.u32(VALUE_TYPES.indexOf(array.elementType));
        this.u64(array.items.length);
        for (const item of array.items) this.value(array.elementType, item);
        return;
      }
    }
  }

  concat(): Uint8Array {
    // A copy of its own: Buffer.concat may hand back a view into a shared pool.
    return new Uint8Array(Buffer.concat(this.chunks));
  }
}

/** The file's bytes. */
export function encodeGguf(kvs: Record<string, KvValue>, tensors: GgufTensorSpec[], options: GgufWriteOptions = {}): Uint8Array {
  const alignment = options.alignment ?? 32;
  const entries = { ...kvs };
  if (options.alignment !== undefined && !('general.alignment' in entries)) entries['general.alignment'] = u32(alignment);
  const out = new Bytes();
  out.push(new TextEncoder().encode('GGUF'));
  out.u32(options.version ?? 3);
  out.u64(options.tensorCount ?? BigInt(tensors.length));
  out.u64(options.kvCount ?? BigInt(Object.keys(entries).length));
  for (const [key, kv] of Object.entries(entries)) {
    out.string(key);
    out.u32(VALUE_TYPES.indexOf(kv.type));
    out.value(kv.type, kv.type === 'array' ? kv : kv.value);
  }
  let offset = 0;
  for (const t of tensors) {
    out.string(t.name);
    out.u32(t.dims.length);
    for (const d of t.dims) out.u64(d);
    out.u32(t.typeId);
    out.u64(t.offset ?? BigInt(offset));
    offset += Math.ceil(t.data.length / alignment) * alignment;
  }
  out.push(new Uint8Array(-out.length & (alignment - 1)));
  for (const t of tensors) {
    out.push(t.data);
    out.push(new Uint8Array(-t.data.length & (alignment - 1)));
  }
  return out.concat();
}

export function writeGguf(path: string, kvs: Record<string, KvValue>, tensors: GgufTensorSpec[], options: GgufWriteOptions = {}): void {
  writeFileSync(path, encodeGguf(kvs, tensors, options));
}
