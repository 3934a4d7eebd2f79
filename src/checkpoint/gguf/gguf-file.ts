import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { invalidModel } from '../../errors.ts';
import { FileCursor } from './file-cursor.ts';
import { describeGgmlTypeId, ggmlType, supportedGgmlTypeNames, type GgmlType } from './ggml-types.ts';
import { GgufMetadata, readValue, readValueType, type GgufValue, type GgufValueType } from './metadata.ts';

/** One tensor's entry in the header: where its bytes are and how to read them. */
export interface GgufTensorInfo {
  name: string;
  /** ggml's dimensions, innermost (the row length) first, as the file lists them. */
  dims: number[];
  type: GgmlType;
  /** Absolute byte offset in the file, and the byte length the type and dims imply. */
  offset: number;
  byteLength: number;
}

const MAGIC = 0x46554747; // "GGUF" read as a little-endian uint32
const SUPPORTED_VERSIONS = [2, 3];
const DEFAULT_ALIGNMENT = 32;
/** ggml tensors have at most four dimensions. */
const MAX_DIMS = 4;
/** Fewest bytes a metadata entry (empty key, type, a one-byte value) or a tensor info (empty name, no dims, type, offset) takes. */
const MIN_KV_BYTES = 8 + 4 + 1;
const MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8;
/** Positioned reads are issued in chunks below the 2 GiB limit of a single read(2). */
const READ_CHUNK_BYTES = 1 << 30;

/**
 * A GGUF file (versions 2 and 3, little-endian): a header of key/value metadata and tensor infos,
 * padded to `general.alignment`, then the tensors' data. Only the header is read at open, and the
 * file is closed again; the first tensor read opens it until `close`, and each tensor is read on
 * demand by offset, so a multi-GB file never sits in memory whole. Every count, length and offset
 * from the file is checked against its size before it is used.
 */
export class GgufFile {
  readonly path: string;
  readonly version: number;
  readonly metadata: GgufMetadata;
  readonly tensors: ReadonlyMap<string, GgufTensorInfo>;
  readonly alignment: number;
  /** Absolute offset of the data section. */
  readonly dataOffset: number;
  private fd: number | null = null;

  private constructor(path: string, header: Header) {
    this.path = path;
    this.version = header.version;
    this.metadata = header.metadata;
    this.tensors = header.tensors;
    this.alignment = header.alignment;
    this.dataOffset = header.dataOffset;
  }

  static open(path: string): GgufFile {
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (error) {
      throw invalidModel(`cannot open ${path}: ${(error as Error).message}`);
    }
    try {
      return new GgufFile(path, readHeader(new FileCursor(path, fd, fstatSync(fd).size)));
    } finally {
      closeSync(fd);
    }
  }

  tensor(name: string): GgufTensorInfo {
    const info = this.tensors.get(name);
    if (!info) throw invalidModel(`${this.path} has no tensor ${name}`);
    return info;
  }

  /** The tensor's bytes as stored (blocks of its type), or `length` of them from byte `begin` of the tensor. */
  readBytes(name: string, begin = 0, length?: number): Uint8Array {
    const info = this.tensor(name);
    const count = length ?? info.byteLength - begin;
    if (begin < 0 || count < 0 || begin + count > info.byteLength) throw new Error(`bytes [${begin}, ${begin + count}) are outside tensor ${name} (${info.byteLength} bytes)`);
    const fd = this.openForReading();
    const data = new Uint8Array(count);
    let done = 0;
    while (done < data.length) {
      const n = readSync(fd, data, done, Math.min(READ_CHUNK_BYTES, data.length - done), info.offset + begin + done);
      if (n === 0) throw invalidModel(`${this.path} ended early: tensor ${name} wants ${data.length} bytes at offset ${info.offset + begin}, got ${done}`);
      done += n;
    }
    return data;
  }

  /** Closes the file if a read opened it; a later read opens it again. */
  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }

  private openForReading(): number {
    if (this.fd === null) {
      try {
        this.fd = openSync(this.path, 'r');
      } catch (error) {
        throw invalidModel(`cannot open ${this.path}: ${(error as Error).message}`);
      }
    }
    return this.fd;
  }
}

interface Header {
  version: number;
  metadata: GgufMetadata;
  tensors: Map<string, GgufTensorInfo>;
  alignment: number;
  dataOffset: number;
}

function readHeader(cursor: FileCursor): Header {
  const path = cursor.path;
  cursor.reserve(4 + 4 + 8 + 8, 'the magic, version and counts');
  const magic = cursor.u32();
  if (magic !== MAGIC) throw invalidModel(`${path} is not a GGUF file (it does not start with "GGUF")`);
  const version = cursor.u32();
  if (!SUPPORTED_VERSIONS.includes(version)) {
    const hint = version === 1 ? ': version 1 files predate 64-bit counts; convert the model again with a current llama.cpp' : '';
    const swapped = version > 0xffff ? ' (it looks big-endian: Keel reads little-endian GGUF only)' : '';
    throw invalidModel(`${path}: GGUF version ${version} is not supported (Keel reads versions ${SUPPORTED_VERSIONS.join(' and ')})${swapped}${hint}`);
  }
  const tensorCount = cursor.size('the tensor count');
  const kvCount = cursor.size('the metadata key count');
  cursor.reserve(kvCount * MIN_KV_BYTES + tensorCount * MIN_TENSOR_INFO_BYTES, `${kvCount} metadata entries and ${tensorCount} tensor infos`);

  const entries = new Map<string, { type: GgufValueType; value: GgufValue }>();
  for (let i = 0; i < kvCount; i++) {
    cursor.context = `metadata entry ${i}`;
    const key = cursor.string(`the key of metadata entry ${i}`);
    cursor.context = `metadata key ${key}`;
    if (entries.has(key)) throw invalidModel(`${path}: metadata key ${key} appears twice`);
    const type = readValueType(cursor, `metadata key ${key}`);
    entries.set(key, { type, value: readValue(cursor, type, `metadata key ${key}`) });
  }
  const metadata = new GgufMetadata(entries, path);
  const alignment = metadata.uint('general.alignment', DEFAULT_ALIGNMENT);
  if (alignment === 0 || (alignment & (alignment - 1)) !== 0) {
    throw invalidModel(`${path}: general.alignment is ${alignment}; it must be a power of two`);
  }

  const infos: Omit<GgufTensorInfo, 'offset'>[] = [];
  const relativeOffsets: bigint[] = [];
  const names = new Set<string>();
  for (let i = 0; i < tensorCount; i++) {
    cursor.context = `tensor info ${i}`;
    const name = cursor.string(`the name of tensor ${i}`);
    cursor.context = `the info of tensor ${name}`;
    if (names.has(name)) throw invalidModel(`${path}: tensor ${name} appears twice`);
    names.add(name);
    const nDims = cursor.u32();
    if (nDims > MAX_DIMS) throw invalidModel(`${path}: tensor ${name} has ${nDims} dimensions; ggml tensors have at most ${MAX_DIMS}`);
    const dims: number[] = [];
    for (let d = 0; d < nDims; d++) dims.push(readDim(cursor, name, d));
    const typeId = cursor.u32();
    const type = ggmlType(typeId);
    if (type === undefined) {
      throw invalidModel(`${path}: tensor ${name} has type ${describeGgmlTypeId(typeId)}, which Keel does not read (supported: ${supportedGgmlTypeNames()})`);
    }
    relativeOffsets.push(cursor.u64());
    infos.push({ name, dims, type, byteLength: byteLength(path, name, dims, type) });
  }
  const dataOffset = alignUp(cursor.position, alignment);

  const tensors = new Map<string, GgufTensorInfo>();
  infos.forEach((info, i) => {
    const relative = relativeOffsets[i];
    if (relative % BigInt(alignment) !== 0n) {
      throw invalidModel(`${path}: tensor ${info.name} starts at data offset ${relative}, which is not a multiple of the alignment ${alignment}`);
    }
    if (BigInt(dataOffset) + relative + BigInt(info.byteLength) > BigInt(cursor.fileSize)) {
      throw invalidModel(
        `${path}: tensor ${info.name} (${info.byteLength} bytes at data offset ${relative}) runs past the end of the file (${cursor.fileSize} bytes); the file is truncated or corrupt`,
      );
    }
    tensors.set(info.name, { ...info, offset: dataOffset + Number(relative) });
  });
  checkNoOverlap(path, tensors);
  return { version, metadata, tensors, alignment, dataOffset };
}

function readDim(cursor: FileCursor, name: string, d: number): number {
  const value = cursor.u64();
  // A dimension larger than the file has bytes cannot be real: every element takes at least a fraction of a byte.
  if (value === 0n || value > BigInt(cursor.fileSize) * 8n) {
    throw invalidModel(`${cursor.path}: tensor ${name} has dimension ${d} of ${value}, impossible in a file of ${cursor.fileSize} bytes`);
  }
  return Number(value);
}

function byteLength(path: string, name: string, dims: number[], type: GgmlType): number {
  if (dims.length > 0 && dims[0] % type.blockElements !== 0) {
    throw invalidModel(`${path}: tensor ${name} has rows of ${dims[0]} values, not a multiple of ${type.name}'s block of ${type.blockElements}`);
  }
  const elements = dims.reduce((a, b) => a * b, 1);
  const bytes = (elements / type.blockElements) * type.blockBytes;
  if (!Number.isSafeInteger(bytes)) throw invalidModel(`${path}: tensor ${name} of shape [${dims.join(', ')}] is impossibly large`);
  return bytes;
}

function alignUp(offset: number, alignment: number): number {
  return Math.ceil(offset / alignment) * alignment;
}

function checkNoOverlap(path: string, tensors: Map<string, GgufTensorInfo>): void {
  const byStart = [...tensors.values()].sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < byStart.length; i++) {
    const prev = byStart[i - 1];
    if (byStart[i].offset < prev.offset + prev.byteLength) throw invalidModel(`${path}: tensors ${prev.name} and ${byStart[i].name} overlap in the data section`);
  }
}
