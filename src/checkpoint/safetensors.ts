import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { DTYPE_BYTES } from '../tensor/host-dtype.ts';
import { sliceRuns, type TensorSlice } from '../tensor/tensor-slice.ts';
import type { HostTensor } from '../tensor/host-tensor.ts';
import { invalidModel } from '../errors.ts';
import type { WeightDType } from '../tensor/host-tensor.ts';

/**
 * Reader of one `.safetensors` file: an 8-byte little-endian header length N, N bytes of JSON
 * (`{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?: {...}}`, offsets relative to
 * the data section), then the data section. Only the header is read at open; each tensor is read
 * on demand with positioned reads, so a multi-GB shard never sits in memory whole.
 */
export interface SafetensorsEntry {
  /** dtype as the file spells it (F32, BF16, I64...). */
  dtype: string;
  shape: number[];
  /** Absolute byte range in the file. */
  begin: number;
  end: number;
}

/** A tensor's bytes with its dtype as the file spells it (I32, F8_E4M3, BF16...). */
export interface RawTensor {
  dtype: string;
  shape: number[];
  data: Uint8Array;
}

const READABLE_DTYPES: Record<string, WeightDType> = { F32: 'f32', F16: 'f16', BF16: 'bf16' };

/** Element sizes of every dtype the format defines, so byte lengths are checked even for tensors Keel never reads. */
const DTYPE_SIZES: Record<string, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U64: 8, U32: 4, U16: 2, U8: 1, BOOL: 1,
  F8_E4M3: 1, F8_E5M2: 1,
};

/** The reference implementation refuses larger headers; a bigger value means a corrupt file. */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;
/** Positioned reads are issued in chunks below the 2 GiB limit of a single read(2). */
const READ_CHUNK_BYTES = 1 << 30;

export class SafetensorsFile {
  readonly path: string;
  readonly tensors: ReadonlyMap<string, SafetensorsEntry>;
  private fd: number | null;

  private constructor(path: string, fd: number, tensors: ReadonlyMap<string, SafetensorsEntry>) {
    this.path = path;
    this.fd = fd;
    this.tensors = tensors;
  }

  static open(path: string): SafetensorsFile {
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (error) {
      throw invalidModel(`cannot open ${path}: ${(error as Error).message}`);
    }
    try {
      return new SafetensorsFile(path, fd, readHeader(path, fd));
    } catch (error) {
      closeSync(fd);
      throw error;
    }
  }

  entry(name: string): SafetensorsEntry {
    const entry = this.tensors.get(name);
    if (!entry) throw invalidModel(`${this.path} has no tensor "${name}"`);
    return entry;
  }

  read(name: string): HostTensor {
    const raw = this.readRaw(name);
    const dtype = READABLE_DTYPES[raw.dtype];
    if (!dtype) {
      throw invalidModel(`${this.path}: tensor "${name}" has dtype ${raw.dtype}; Keel reads only F32, F16 and BF16 as numbers`);
    }
    return { dtype, shape: raw.shape, data: raw.data };
  }

  /**
   * A slice of a tensor (a tensor-parallel shard), reading only its bytes: one positioned read per
   * run of contiguous elements (one in all for a slice of rows).
   */
  readSlice(name: string, slice: TensorSlice): HostTensor {
    const entry = this.entry(name);
    const dtype = READABLE_DTYPES[entry.dtype];
    if (!dtype) throw invalidModel(`${this.path}: tensor "${name}" has dtype ${entry.dtype}; Keel reads only F32, F16 and BF16 as numbers`);
    if (this.fd === null) throw new Error(`${this.path} is closed`);
    const { runs, runBytes, strideBytes, firstByte } = sliceRuns(entry.shape, DTYPE_BYTES[dtype], slice);
    const data = new Uint8Array(runs * runBytes);
    for (let i = 0; i < runs; i++) readFully(this.path, this.fd, data.subarray(i * runBytes, (i + 1) * runBytes), entry.begin + firstByte + i * strideBytes);
    const shape = entry.shape.slice();
    shape[slice.dim] = slice.count;
    return { dtype, shape, data };
  }

  /** A tensor's bytes whatever its dtype (the packed integer and FP8 tensors of quantized checkpoints). */
  readRaw(name: string): RawTensor {
    const entry = this.entry(name);
    if (this.fd === null) throw new Error(`${this.path} is closed`);
    const data = new Uint8Array(entry.end - entry.begin);
    readFully(this.path, this.fd, data, entry.begin);
    return { dtype: entry.dtype, shape: entry.shape.slice(), data };
  }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }
}

function readFully(path: string, fd: number, into: Uint8Array, position: number): void {
  let done = 0;
  while (done < into.length) {
    const n = readSync(fd, into, done, Math.min(READ_CHUNK_BYTES, into.length - done), position + done);
    if (n === 0) throw invalidModel(`${path} ended early: wanted ${into.length} bytes at offset ${position}, got ${done}`);
    done += n;
  }
}

function readHeader(path: string, fd: number): Map<string, SafetensorsEntry> {
  const fileSize = fstatSync(fd).size;
  if (fileSize < 8) throw invalidModel(`${path} is ${fileSize} bytes long: too short to be a safetensors file`);
  const prefix = new Uint8Array(8);
  readFully(path, fd, prefix, 0);
  const headerBytes = Number(new DataView(prefix.buffer).getBigUint64(0, true));
  if (headerBytes > MAX_HEADER_BYTES) {
    throw invalidModel(`${path}: header length ${headerBytes} is implausibly large (corrupt or not a safetensors file)`);
  }
  if (8 + headerBytes > fileSize) {
    throw invalidModel(`${path}: header length ${headerBytes} runs past the end of the file (${fileSize} bytes); the file is truncated or not safetensors`);
  }
  const headerData = new Uint8Array(headerBytes);
  readFully(path, fd, headerData, 8);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(headerData));
  } catch (error) {
    throw invalidModel(`${path}: invalid header JSON (${(error as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) {
    throw invalidModel(`${path}: the header must be a JSON object`);
  }
  const dataStart = 8 + headerBytes;
  const entries = new Map<string, SafetensorsEntry>();
  for (const [name, raw] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    entries.set(name, parseEntry(path, name, raw, dataStart, fileSize - dataStart));
  }
  checkNoOverlap(path, entries);
  return entries;
}

function parseEntry(path: string, name: string, raw: unknown, dataStart: number, dataBytes: number): SafetensorsEntry {
  const where = `${path}: tensor "${name}"`;
  if (typeof raw !== 'object' || raw === null) throw invalidModel(`${where}: header entry must be an object`);
  const { dtype, shape, data_offsets: offsets } = raw as Record<string, unknown>;
  if (typeof dtype !== 'string') throw invalidModel(`${where}: missing dtype`);
  if (!Array.isArray(shape) || !shape.every(isNonNegativeInteger)) {
    throw invalidModel(`${where}: shape must be a list of non-negative integers (got ${JSON.stringify(shape)})`);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegativeInteger)) {
    throw invalidModel(`${where}: data_offsets must be [begin, end] (got ${JSON.stringify(offsets)})`);
  }
  const [begin, end] = offsets as number[];
  if (begin > end || end > dataBytes) {
    throw invalidModel(`${where}: data_offsets [${begin}, ${end}] fall outside the data section (${dataBytes} bytes); the file is truncated or corrupt`);
  }
  const elementBytes = DTYPE_SIZES[dtype];
  const elements = (shape as number[]).reduce((a, b) => a * b, 1);
  if (elementBytes !== undefined && end - begin !== elements * elementBytes) {
    throw invalidModel(
      `${where}: holds ${end - begin} bytes but shape [${shape.join(', ')}] of ${dtype} needs ${elements * elementBytes}`,
    );
  }
  return { dtype, shape: shape as number[], begin: dataStart + begin, end: dataStart + end };
}

function checkNoOverlap(path: string, entries: Map<string, SafetensorsEntry>): void {
  const byStart = [...entries].filter(([, e]) => e.end > e.begin).sort(([, a], [, b]) => a.begin - b.begin);
  for (let i = 1; i < byStart.length; i++) {
    const [prevName, prev] = byStart[i - 1];
    const [name, entry] = byStart[i];
    if (entry.begin < prev.end) throw invalidModel(`${path}: tensors "${prevName}" and "${name}" overlap in the data section`);
  }
}

function isNonNegativeInteger(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}
