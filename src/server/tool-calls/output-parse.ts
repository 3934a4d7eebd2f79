import type { StructuralTagFormat } from '../../sampling/structured-output.ts';
import type { CallableFunction } from './call-markup.ts';
import { JsonObjectScanner } from './json-object-scanner.ts';

/** A tool call read from a model's output. */
export interface CallParse {
  name: string;
  /** The arguments' JSON text as far as it can be shown yet: it only ever grows as the output does. */
  arguments: string;
  /** The call's text has ended (its arguments are whole). */
  complete: boolean;
}

/**
 * What a tool-call format reads from a model's output so far. Each field only ever grows as the
 * output does (the streamed deltas are the differences): text that may turn out to be markup (a
 * marker's first characters, whitespace before a call) is held back until the output says which.
 */
export interface OutputParse {
  content: string;
  /** Text of a reasoning channel (harmony's analysis), shown apart from the content. */
  reasoning: string;
  calls: CallParse[];
}

/** How one model family writes tool calls in its output (`--tool-call-parser`). */
export interface ToolCallFormat {
  readonly name: string;
  /** Its markers are special tokens, which the detokenizer must keep in the text. */
  readonly keepsSpecialTokens: boolean;
  /** Its output has channels (content, reasoning, calls) even without tools, so it is always parsed. */
  readonly hasChannels: boolean;
  /** Tool call ids as its chat template accepts them back. */
  newCallId(): string;
  /**
   * Reads `text`, the output so far; `final` when no more will come (nothing is held back then).
   * `functions` are those the request offered: formats that write argument values as bare text
   * read each as a string or as JSON by its parameter's schema.
   */
  parse(text: string, final: boolean, functions: readonly CallableFunction[]): OutputParse;
  /**
   * The shape of an output that is nothing but calls to `functions`, written in this format with
   * each function's parameter schema inside (tool_choice "required" or a named function): one
   * call, or one or more when `parallel`. `template` is the chat template, for formats whose
   * markup changed between model versions. `parse` reads every output of this shape as its calls.
   */
  callsOnly(functions: CallableFunction[], parallel: boolean, template: string | null): StructuralTagFormat;
}

/** Builds an OutputParse from the output's pieces in order: content segments and calls. */
export class ParseBuilder {
  readonly result: OutputParse = { content: '', reasoning: '', calls: [] };
  private readonly final: boolean;

  constructor(final: boolean) {
    this.final = final;
  }

  /**
   * Content between calls. Whitespace that only separates it from a call is dropped: leading
   * whitespace after a call, trailing whitespace before one (and, until the output ends, trailing
   * whitespace at its end, since a call may yet follow).
   */
  content(segment: string, callFollows: boolean): void {
    let text = this.result.calls.length > 0 ? segment.trimStart() : segment;
    if (callFollows || !this.final) text = text.trimEnd();
    this.result.content += text;
  }

  /** Content at the output's end, less any tail that could be the start of one of `markers`. */
  tail(segment: string, markers: readonly string[]): void {
    this.content(this.final ? segment : segment.slice(0, segment.length - heldMarkerPrefix(segment, markers)), false);
  }

  call(call: CallParse): void {
    this.result.calls.push(call);
  }
}

/**
 * The calls in `text`, each opening with `open` and read by `readCall` from just after it; the
 * text between them is content. A marker that does not open a call (readCall says invalid) is
 * content too.
 */
export function parseMarkedCalls(text: string, final: boolean, open: string, readCall: (at: number) => CallScan): OutputParse {
  const out = new ParseBuilder(final);
  let segmentStart = 0;
  let searchFrom = 0;
  for (;;) {
    const at = text.indexOf(open, searchFrom);
    if (at < 0) break;
    const read = readCall(at + open.length);
    if (read.state === 'invalid') {
      searchFrom = at + open.length;
      continue;
    }
    out.content(text.slice(segmentStart, at), true);
    if (read.state === 'pending') return out.result;
    out.call(read.call);
    if (!read.call.complete) return out.result;
    segmentStart = searchFrom = read.end;
  }
  out.tail(text.slice(segmentStart), [open]);
  return out.result;
}

/** The length of the longest tail of `text` that is a proper prefix of one of `markers`. */
export function heldMarkerPrefix(text: string, markers: readonly string[]): number {
  let held = 0;
  for (const marker of markers) {
    for (let n = Math.min(marker.length - 1, text.length); n > held; n--) {
      if (text.endsWith(marker.slice(0, n))) {
        held = n;
        break;
      }
    }
  }
  return held;
}

/** Whether `text` from `at` on could still grow into `marker` (it is a proper prefix of it). */
export function couldBecome(text: string, at: number, marker: string): boolean {
  const rest = text.slice(at);
  return rest.length < marker.length && marker.startsWith(rest);
}

export function skipWhitespace(text: string, at: number): number {
  while (at < text.length && /\s/.test(text[at])) at++;
  return at;
}

/** What a call's reader (scanCallObject, a format's) reads at a position; `end` is where the call's text ends (the output's end while it is open). */
export type CallScan =
  /** The output so far cannot tell yet. */
  | { state: 'pending' }
  /** Not a call: the text is content. */
  | { state: 'invalid' }
  | { state: 'call'; call: CallParse; end: number };

const NAME_KEY = 'name';
const ARGUMENT_KEYS = ['arguments', 'parameters'];

/**
 * Reads a call written as one JSON object, `{"name": ..., "arguments" | "parameters": {...}}`,
 * from `start` (after any whitespace). It is a call once its name is read and its arguments have
 * begun (or the object has ended without any: arguments `{}`); before that it is pending, and if
 * the object turns out to be something else, or the output ends first, it is not a call.
 */
export function scanCallObject(text: string, start: number, final: boolean): CallScan {
  const scanner = new JsonObjectScanner();
  scanner.push(text.slice(start));
  if (scanner.state === 'invalid') return { state: 'invalid' };
  const end = start + scanner.text.length;
  const nameSpan = scanner.member(NAME_KEY);
  const argsKey = ARGUMENT_KEYS.find((key) => scanner.member(key) !== undefined);
  const argsSpan = argsKey === undefined ? undefined : scanner.member(argsKey);
  const done = scanner.state === 'done';
  if (nameSpan === undefined || nameSpan.end === null || (argsSpan === undefined && !done)) {
    return done || final ? { state: 'invalid' } : { state: 'pending' };
  }
  const name = parseJson(text.slice(start + nameSpan.start, start + nameSpan.end));
  if (typeof name !== 'string' || name === '') return { state: 'invalid' };
  if (argsSpan === undefined) return { state: 'call', call: { name, arguments: '{}', complete: true }, end };
  const argsStart = start + argsSpan.start;
  const argsEnd = argsSpan.end === null ? null : start + argsSpan.end;
  return { state: 'call', call: { name, arguments: shownArguments(text, argsStart, argsEnd), complete: done }, end };
}

/**
 * Arguments written as a JSON value from `start` to `end` (null: still open). An object or array
 * is shown as it is written; a string (arguments some models write JSON-encoded) only once it
 * closes, decoded.
 */
export function shownArguments(text: string, start: number, end: number | null): string {
  const opener = text[start];
  if (opener === '{' || opener === '[') return text.slice(start, end ?? text.length);
  if (end === null) return '';
  const value = parseJson(text.slice(start, end));
  if (typeof value === 'string') return value;
  return value === null ? '{}' : text.slice(start, end);
}

/**
 * Reads a bare JSON object (a call's arguments) from `start` (after whitespace): its extent, or
 * null if the text there is not one.
 */
export function scanArgumentsObject(text: string, start: number): { end: number; complete: boolean } | null {
  const scanner = new JsonObjectScanner();
  scanner.push(text.slice(start));
  if (scanner.state === 'invalid') return null;
  return { end: start + scanner.text.length, complete: scanner.state === 'done' };
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}
