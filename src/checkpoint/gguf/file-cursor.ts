import { readSync } from 'node:fs';
import { invalidModel } from '../../errors.ts';

/** Bytes read from the file at a time while parsing the header. */
const WINDOW_BYTES = 1 << 20;

/**
 * A little-endian reader moving forward through an open file, for the GGUF header. It reads the
 * file through a window, so a header of many megabytes (a large vocabulary) is never held twice,
 * and every read is checked against the file's size first: a count or length from the file is
 * trusted only after `reserve` has checked that the bytes it implies exist.
 */
export class FileCursor {
  readonly path: string;
  readonly fileSize: number;
  private readonly fd: number;
  private window = new Uint8Array(0);
  private view = new DataView(this.window.buffer);
  /** File offset of window[0], and how many bytes from there the window holds. */
  private windowStart = 0;
  private windowFilled = 0;
  /** The cursor's file offset. */
  position = 0;
  /** What is being read, for errors about a number in it: "the header", "metadata key general.name"... */
  context = 'the header';

  constructor(path: string, fd: number, fileSize: number) {
    this.path = path;
    this.fd = fd;
    this.fileSize = fileSize;
  }

  get remaining(): number {
    return this.fileSize - this.position;
  }

  /** Throws unless `bytes` more bytes exist past the cursor (`what` says what would need them). */
  reserve(bytes: number, what: string): void {
    if (bytes > this.remaining) {
      throw invalidModel(`${this.path}: the file ends ${this.remaining} bytes after offset ${this.position}, too soon for ${what} (${bytes} bytes): it is truncated or corrupt`);
    }
  }

  u8(): number {
    const i = this.at(1, 'a uint8');
    return this.view.getUint8(i);
  }

  i8(): number {
    const i = this.at(1, 'an int8');
    return this.view.getInt8(i);
  }

  u16(): number {
    const i = this.at(2, 'a uint16');
    return this.view.getUint16(i, true);
  }

  i16(): number {
    const i = this.at(2, 'an int16');
    return this.view.getInt16(i, true);
  }

  u32(): number {
    const i = this.at(4, 'a uint32');
    return this.view.getUint32(i, true);
  }

  i32(): number {
    const i = this.at(4, 'an int32');
    return this.view.getInt32(i, true);
  }

  f32(): number {
    const i = this.at(4, 'a float32');
    return this.view.getFloat32(i, true);
  }

  f64(): number {
    const i = this.at(8, 'a float64');
    return this.view.getFloat64(i, true);
  }

  u64(): bigint {
    const i = this.at(8, 'a uint64');
    return this.view.getBigUint64(i, true);
  }

  i64(): bigint {
    const i = this.at(8, 'an int64');
    return this.view.getBigInt64(i, true);
  }

  /** A uint64 that must be a count or size this file could hold: at most the file's size. */
  size(what: string): number {
    const value = this.u64();
    if (value > BigInt(this.fileSize)) {
      throw invalidModel(`${this.path}: ${what} is ${value}, more than the file's ${this.fileSize} bytes could hold (corrupt file)`);
    }
    return Number(value);
  }

  /** A GGUF string: a uint64 byte length, then that many bytes of UTF-8. */
  string(what: string): string {
    const length = this.size(`the length of ${what}`);
    this.reserve(length, `${what} (${length} bytes)`);
    const start = this.at(length, what);
    try {
      return UTF8.decode(this.window.subarray(start, start + length));
    } catch {
      throw invalidModel(`${this.path}: ${what} at offset ${this.position - length} is not valid UTF-8`);
    }
  }

  /** Moves the cursor to `offset` (within the file). */
  seek(offset: number): void {
    this.position = offset;
  }

  /**
   * Reserves `bytes`, makes them resident in the window and advances; returns their index in the
   * window. It may replace the window: read `this.view` only after calling it.
   */
  private at(bytes: number, what: string): number {
    if (bytes > this.remaining) this.reserve(bytes, `${what} in ${this.context}`);
    let index = this.position - this.windowStart;
    if (index < 0 || index + bytes > this.windowFilled) {
      this.fill(bytes);
      index = 0;
    }
    this.position += bytes;
    return index;
  }

  private fill(bytes: number): void {
    const length = Math.min(Math.max(bytes, WINDOW_BYTES), this.remaining);
    // A window larger than usual (one long string) is dropped once read past.
    if (this.window.length < length || this.window.length > WINDOW_BYTES) {
      this.window = new Uint8Array(length);
      this.view = new DataView(this.window.buffer);
    }
    let done = 0;
    while (done < length) {
      const n = readSync(this.fd, this.window, done, length - done, this.position + done);
      if (n === 0) throw invalidModel(`${this.path} ended early while reading ${this.context} (it shrank while being read?)`);
      done += n;
    }
    this.windowStart = this.position;
    this.windowFilled = length;
  }
}

const UTF8 = new TextDecoder('utf-8', { fatal: true });
