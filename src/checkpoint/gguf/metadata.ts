import { invalidModel } from '../../errors.ts';
import type { FileCursor } from './file-cursor.ts';

/** GGUF metadata value types (the file's uint32 type ids). */
export const VALUE_TYPES = ['uint8', 'int8', 'uint16', 'int16', 'uint32', 'int32', 'float32', 'bool', 'string', 'array', 'uint64', 'int64', 'float64'] as const;
export type GgufValueType = (typeof VALUE_TYPES)[number];

/**
 * A metadata value: numbers for every numeric type (a 64-bit integer beyond 2^53 stays a bigint),
 * and arrays with their element type (nested arrays hold GgufArray items).
 */
export type GgufValue = number | bigint | boolean | string | GgufArray;
export interface GgufArray {
  elementType: GgufValueType;
  items: GgufValue[];
}

/** Fewest bytes one value of a type occupies: what a count is checked against before anything is allocated. */
const MIN_BYTES: Record<GgufValueType, number> = {
  uint8: 1, int8: 1, bool: 1, uint16: 2, int16: 2, uint32: 4, int32: 4, float32: 4, uint64: 8, int64: 8, float64: 8,
  string: 8, array: 4 + 8,
};

/** Arrays nested deeper than this are refused (GGUF's own files nest at most two deep). */
const MAX_NESTING = 8;

export function readValueType(cursor: FileCursor, what: string): GgufValueType {
  const id = cursor.u32();
  const type = VALUE_TYPES[id];
  if (type === undefined) {
    throw invalidModel(`${cursor.path}: ${what} has value type id ${id}, which GGUF does not define (0-${VALUE_TYPES.length - 1})`);
  }
  return type;
}

export function readValue(cursor: FileCursor, type: GgufValueType, what: string, depth = 0): GgufValue {
  switch (type) {
    case 'uint8': return cursor.u8();
    case 'int8': return cursor.i8();
    case 'uint16': return cursor.u16();
    case 'int16': return cursor.i16();
    case 'uint32': return cursor.u32();
    case 'int32': return cursor.i32();
    case 'float32': return cursor.f32();
    case 'float64': return cursor.f64();
    case 'uint64': return narrow(cursor.u64());
    case 'int64': return narrow(cursor.i64());
    case 'bool': {
      const byte = cursor.u8();
      if (byte > 1) throw invalidModel(`${cursor.path}: ${what} is a bool of value ${byte} (0 or 1 expected)`);
      return byte === 1;
    }
    case 'string': return cursor.string(what);
    case 'array': {
      if (depth >= MAX_NESTING) throw invalidModel(`${cursor.path}: ${what} nests arrays more than ${MAX_NESTING} deep`);
      const elementType = readValueType(cursor, `the elements of ${what}`);
      const count = cursor.size(`the element count of ${what}`);
      cursor.reserve(count * MIN_BYTES[elementType], `${what} (${count} ${elementType} values)`);
      const items: GgufValue[] = new Array(count);
      for (let i = 0; i < count; i++) items[i] = readValue(cursor, elementType, `${what}[${i}]`, depth + 1);
      return { elementType, items };
    }
  }
}

function narrow(value: bigint): number | bigint {
  return value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value;
}

const INTEGER_TYPES: ReadonlySet<GgufValueType> = new Set(['uint8', 'int8', 'uint16', 'int16', 'uint32', 'int32', 'uint64', 'int64']);

/** A GGUF file's key/value metadata with typed getters whose errors name the key and the file. */
export class GgufMetadata {
  readonly source: string;
  private readonly entries: ReadonlyMap<string, { type: GgufValueType; value: GgufValue }>;

  constructor(entries: ReadonlyMap<string, { type: GgufValueType; value: GgufValue }>, source: string) {
    this.entries = entries;
    this.source = source;
  }

  get keys(): string[] {
    return [...this.entries.keys()];
  }

  has(key: string): boolean {
    return this.entries.has(key);
  }

  /** The value as read, or undefined when absent. */
  raw(key: string): GgufValue | undefined {
    return this.entries.get(key)?.value;
  }

  /** A non-negative integer of any integer type, or `fallback` when absent (required when no fallback). */
  uint(key: string, fallback?: number): number {
    const entry = this.entries.get(key);
    if (entry === undefined) return this.fallback(key, fallback);
    if (!INTEGER_TYPES.has(entry.type) || typeof entry.value !== 'number' || entry.value < 0) throw this.invalid(key, 'a non-negative integer', entry.value);
    return entry.value;
  }

  /** A number of any numeric type. */
  number(key: string, fallback?: number): number {
    const entry = this.entries.get(key);
    if (entry === undefined) return this.fallback(key, fallback);
    if (typeof entry.value !== 'number') throw this.invalid(key, 'a number', entry.value);
    return entry.value;
  }

  bool(key: string, fallback?: boolean): boolean {
    const entry = this.entries.get(key);
    if (entry === undefined) return this.fallback(key, fallback);
    if (typeof entry.value !== 'boolean') throw this.invalid(key, 'a bool', entry.value);
    return entry.value;
  }

  string(key: string, fallback?: string): string {
    const entry = this.entries.get(key);
    if (entry === undefined) return this.fallback(key, fallback);
    if (typeof entry.value !== 'string') throw this.invalid(key, 'a string', entry.value);
    return entry.value;
  }

  /** An array of strings (a vocabulary, merges). */
  strings(key: string): string[] {
    const items = this.array(key, (t) => t === 'string', 'an array of strings');
    return items as string[];
  }

  /** An array of numbers of any numeric type (scores, token types, per-layer counts). */
  numbers(key: string): number[] {
    const items = this.array(key, (t) => t !== 'string' && t !== 'array' && t !== 'bool', 'an array of numbers');
    if (!items.every((v) => typeof v === 'number')) throw this.invalid(key, 'an array of numbers', undefined);
    return items as number[];
  }

  /** An array of bools (per-layer flags). */
  bools(key: string): boolean[] {
    return this.array(key, (t) => t === 'bool', 'an array of bools') as boolean[];
  }

  private array(key: string, elementOk: (type: GgufValueType) => boolean, expected: string): GgufValue[] {
    const entry = this.entries.get(key);
    if (entry === undefined) throw invalidModel(`${this.source}: required metadata key ${key} is missing`);
    const value = entry.value;
    if (typeof value !== 'object' || !elementOk(value.elementType)) throw this.invalid(key, expected, value);
    return value.items;
  }

  private fallback<T>(key: string, fallback: T | undefined): T {
    if (fallback === undefined) throw invalidModel(`${this.source}: required metadata key ${key} is missing`);
    return fallback;
  }

  private invalid(key: string, expected: string, value: GgufValue | undefined): Error {
    return invalidModel(`${this.source}: metadata key ${key} must be ${expected} (got ${describe(value)})`);
  }
}

function describe(value: GgufValue | undefined): string {
  if (value === undefined) return 'something else';
  if (typeof value === 'object') return `an array of ${value.items.length} ${value.elementType} values`;
  if (typeof value === 'bigint') return `${value}`;
  return JSON.stringify(value);
}
