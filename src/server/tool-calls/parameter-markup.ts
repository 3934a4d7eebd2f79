import type { StructuralTagFormat } from '../../sampling/structured-output.ts';
import type { CallableFunction } from './call-markup.ts';
import { couldBecome, heldMarkerPrefix, skipWhitespace } from './output-parse.ts';

// The pieces shared by formats that write each argument as its own markup element, its value as
// bare text (GLM's `<arg_key>`/`<arg_value>`, Qwen3-Coder's `<parameter=…>`): what a value is
// (text or JSON, by the function's schema), the arguments' JSON as it grows, and the grammar of a
// value for constrained calls.

/** One parameter as a call's markup has written it so far. */
export interface WrittenParameter {
  key: string;
  /** Its value, as the format reads it: all of it once closed; while open, what cannot turn out to be markup. */
  value: string;
  closed: boolean;
}

/** What a format reads where a parameter opens: the parameter closed, or still open (the call then too), or markup it does not know. */
export type ParameterRead = { state: 'closed'; param: WrittenParameter; end: number } | { state: 'open'; param: WrittenParameter | null } | { state: 'stray' };

/**
 * A call's parameters from `at`, each opening with `opener` and read by `readParameter`, until
 * `closer` (state `closing`, `at` where it starts), the output's end while more may come or
 * inside a value (`open`), or anything else (`stray`, `at` where it starts: the model has left the
 * format, and the call ends there).
 */
export function readParameters(
  text: string,
  at: number,
  final: boolean,
  opener: string,
  closer: string,
  readParameter: (at: number) => ParameterRead,
): { params: WrittenParameter[]; at: number; state: 'closing' | 'open' | 'stray' } {
  const params: WrittenParameter[] = [];
  for (;;) {
    at = skipWhitespace(text, at);
    if (text.startsWith(closer, at)) return { params, at, state: 'closing' };
    const read = text.startsWith(opener, at) ? readParameter(at) : null;
    if (read?.state === 'closed') {
      params.push(read.param);
      at = read.end;
      continue;
    }
    if (read?.state === 'open') {
      if (read.param !== null) params.push(read.param);
      return { params, at: text.length, state: 'open' };
    }
    const mayGrow = read === null && !final && (at === text.length || couldBecome(text, at, opener) || couldBecome(text, at, closer));
    return mayGrow ? { params, at: text.length, state: 'open' } : { params, at, state: 'stray' };
  }
}

/**
 * A value still open at the output's end, as far as it may be shown: less its tail that may be the
 * start of `close`, then less what `dropTrailing` says the format drops from a value's end (until
 * the output ends, when all of it shows).
 */
export function openValue(raw: string, close: string, final: boolean, dropTrailing: (value: string) => string): string {
  return final ? raw : dropTrailing(raw.slice(0, raw.length - heldMarkerPrefix(raw, [close])));
}

/**
 * The arguments' JSON text for the parameters written so far, in order: a string value as text
 * (streamed, escaped, while it is open), any other value as the JSON it parses as (else as text),
 * shown once it closes (or the output ends); `}` once the call has closed. It only grows as the
 * output does.
 */
export function argumentsJson(fn: CallableFunction | undefined, params: readonly WrittenParameter[], callClosed: boolean, final: boolean): string {
  const entries: string[] = [];
  for (const param of params) {
    const entry = shownEntry(fn, param, final);
    if (entry === null) break;
    entries.push(entry);
  }
  return `{${entries.join(', ')}${callClosed ? '}' : ''}`;
}

function shownEntry(fn: CallableFunction | undefined, { key, value, closed }: WrittenParameter, final: boolean): string | null {
  const name = `${JSON.stringify(key)}: `;
  if (isStringParameter(fn, key)) {
    if (closed) return name + JSON.stringify(value);
    // A lone high surrogate waits for its pair: JSON escapes it alone, not in the pair.
    const shown = !final && /[\uD800-\uDBFF]$/.test(value) ? value.slice(0, -1) : value;
    return name + JSON.stringify(shown).slice(0, -1);
  }
  if (closed) return name + jsonValue(value);
  // A value cut by the output's end is shown as far as it got, as the JSON formats show theirs.
  return final ? name + value.trim() : null;
}

/** A non-string value: its text if that is JSON, else the text as a JSON string. */
function jsonValue(text: string): string {
  const trimmed = text.trim();
  try {
    JSON.parse(trimmed);
    return trimmed;
  } catch {
    return JSON.stringify(text);
  }
}

/** Whether the function's schema makes `key` a string: its value is then the text as written. */
export function isStringParameter(fn: CallableFunction | undefined, key: string): boolean {
  const schema = propertySchemas(fn).get(key);
  if (schema === undefined) return false;
  const type = schema.type;
  if (type === 'string' || (Array.isArray(type) && type.includes('string'))) return true;
  return type === undefined && stringLiterals(schema) !== null;
}

function propertySchemas(fn: CallableFunction | undefined): Map<string, Record<string, unknown>> {
  const properties = isRecord(fn?.parameters) ? fn.parameters.properties : undefined;
  if (!isRecord(properties)) return new Map();
  return new Map(Object.entries(properties).map(([key, schema]) => [key, isRecord(schema) ? schema : {}]));
}

/** The strings a string schema's `enum` or `const` allows, or null if it names none. */
function stringLiterals(schema: Record<string, unknown>): string[] | null {
  const literals = Array.isArray(schema.enum) ? (schema.enum as unknown[]) : 'const' in schema ? [schema.const] : null;
  return literals !== null && literals.length > 0 && literals.every((v) => typeof v === 'string') ? (literals as string[]) : null;
}

/**
 * The parameters a constrained call writes, as `element(key, value)` each: the schema's required
 * parameters in the order `properties` lists them. Optional ones are left out: xgrammar's
 * structural tags take no empty alternative, so "this element or nothing" cannot be written.
 */
export function requiredParameterElements(
  fn: CallableFunction,
  closeTag: string,
  element: (key: string, value: StructuralTagFormat) => StructuralTagFormat[],
): StructuralTagFormat[] {
  const schemas = propertySchemas(fn);
  const required = isRecord(fn.parameters) && Array.isArray(fn.parameters.required) ? (fn.parameters.required as unknown[]).filter((k): k is string => typeof k === 'string') : [];
  const ordered = [...schemas.keys()].filter((k) => required.includes(k)).concat(required.filter((k) => !schemas.has(k)));
  return ordered.flatMap((key) => element(key, valueFormat(fn, key, schemas.get(key) ?? {}, closeTag)));
}

/** A parameter's value: a string as text that the format reads back whole, anything else as JSON under its schema. */
function valueFormat(fn: CallableFunction, key: string, schema: Record<string, unknown>, closeTag: string): StructuralTagFormat {
  if (!isStringParameter(fn, key)) return { type: 'json_schema', json_schema: schema };
  const literals = stringLiterals(schema);
  if (literals !== null) return { type: 'regex', pattern: `(?:${literals.map(escapeRegex).join('|')})` };
  if (typeof schema.minLength === 'number' || typeof schema.maxLength === 'number') {
    // Bounded text leaves `<` out: a length bound on "text without the closing tag" is no simple regex.
    return { type: 'regex', pattern: `[^<]{${schema.minLength ?? 0},${schema.maxLength ?? ''}}` };
  }
  return { type: 'regex', pattern: textWithout(closeTag) };
}

/**
 * A regex of the texts that do not contain `tag` (which starts with `<`, its only `<`), without
 * lookahead: characters other than `<`, and `<`-groups that leave the tag before its end, either
 * on a character that is neither the tag's next one nor `<`, or just before another `<` or the end.
 */
export function textWithout(tag: string): string {
  if (!tag.startsWith('<') || tag.indexOf('<', 1) >= 0) throw new Error(`textWithout needs a tag whose only '<' is its first character: ${tag}`);
  const rest = [...tag.slice(1)];
  // After `<` and rest[0..k), a character that breaks off the tag, or the tag's next character.
  let leaving = `[^${escapeClass(rest[rest.length - 1])}<]`;
  let dangling = '';
  for (let k = rest.length - 2; k >= 0; k--) {
    leaving = `(?:[^${escapeClass(rest[k])}<]|${escapeRegex(rest[k])}${leaving})`;
    dangling = `(?:${escapeRegex(rest[k])}${dangling})?`;
  }
  const left = `<${leaving}`;
  const open = `<${dangling}`;
  return `(?:[^<]|(?:${open})*${left})*(?:${open})*`;
}

function escapeRegex(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function escapeClass(char: string): string {
  return /[\]\\^-]/.test(char) ? `\\${char}` : char;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
