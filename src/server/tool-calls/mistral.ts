import { nineCharCallId } from './call-ids.ts';
import { callTags, jsonName, oneOrMore } from './call-markup.ts';
import { ParseBuilder, scanArgumentsObject, scanCallObject, skipWhitespace, type CallParse, type OutputParse, type ToolCallFormat } from './output-parse.ts';

const TOOL_CALLS = '[TOOL_CALLS]';
const ARGS = '[ARGS]';
const CALL_ID = '[CALL_ID]';
const FUNCTION_NAME = /^[\w.-]+$/;

type Calls = { state: 'pending' } | { state: 'invalid' } | { state: 'calls'; calls: CallParse[]; end: number; open: boolean };

/**
 * Mistral: `[TOOL_CALLS]` (a control token) and then either a JSON array of `{"name", "arguments"}`
 * objects (tokenizers before v11) or `name[ARGS]{...}`, repeated after another `[TOOL_CALLS]` for
 * each call (v11 on: Mistral Small 3.2, Magistral, Devstral); `[CALL_ID]id` may sit before `[ARGS]`.
 */
export const mistralFormat: ToolCallFormat = {
  name: 'mistral',
  keepsSpecialTokens: true,
  hasChannels: false,
  newCallId: nineCharCallId,
  parse(text: string, final: boolean): OutputParse {
    const out = new ParseBuilder(final);
    let segmentStart = 0;
    let searchFrom = 0;
    for (;;) {
      const marker = text.indexOf(TOOL_CALLS, searchFrom);
      if (marker < 0) break;
      const at = skipWhitespace(text, marker + TOOL_CALLS.length);
      const read = text[at] === '[' ? readArray(text, at, final) : readNamed(text, at, final);
      if (read.state === 'invalid') {
        searchFrom = marker + TOOL_CALLS.length;
        continue;
      }
      out.content(text.slice(segmentStart, marker), true);
      if (read.state === 'pending') return out.result;
      read.calls.forEach((call) => out.call(call));
      if (read.open) return out.result;
      segmentStart = searchFrom = read.end;
    }
    out.tail(text.slice(segmentStart), [TOOL_CALLS]);
    return out.result;
  },
  callsOnly(functions, parallel, template) {
    // v11 templates write each call back as [TOOL_CALLS]name[ARGS]{...}; older ones as one array.
    if (template?.includes(ARGS)) {
      const named = callTags(functions, (name) => `${name}${ARGS}`, '');
      return { type: 'sequence', elements: [{ type: 'const_string', value: TOOL_CALLS }, oneOrMore(named, TOOL_CALLS, parallel)] };
    }
    const objects = callTags(functions, (name) => `{"name": ${jsonName(name)}, "arguments": `, '}');
    return { type: 'tag', begin: `${TOOL_CALLS}[`, content: oneOrMore(objects, ', ', parallel), end: ']' };
  },
};

/** `[{"name": ..., "arguments": {...}}, ...]` from `at`, which holds the `[`. */
function readArray(text: string, at: number, final: boolean): Calls {
  const calls: CallParse[] = [];
  let pos = skipWhitespace(text, at + 1);
  for (;;) {
    if (text[pos] === ']') return { state: 'calls', calls, end: pos + 1, open: false };
    const scan = scanCallObject(text, pos, final);
    if (scan.state !== 'call') {
      if (calls.length === 0) return { state: scan.state };
      return { state: 'calls', calls, end: pos, open: scan.state === 'pending' };
    }
    calls.push(scan.call);
    if (!scan.call.complete) return { state: 'calls', calls, end: text.length, open: true };
    pos = skipWhitespace(text, scan.end);
    if (text[pos] === ',') pos = skipWhitespace(text, pos + 1);
    else if (text[pos] !== ']') return { state: 'calls', calls, end: pos, open: !final && pos === text.length };
  }
}

/** `name[ARGS]{...}` (or `name[CALL_ID]id[ARGS]{...}`) from `at`. */
function readNamed(text: string, at: number, final: boolean): Calls {
  const args = text.indexOf(ARGS, at);
  if (args < 0) {
    // Until [ARGS] comes, what follows the marker must still look like a function name.
    const name = text.slice(at).split('[', 1)[0];
    return !final && (name === '' || FUNCTION_NAME.test(name)) ? { state: 'pending' } : { state: 'invalid' };
  }
  const head = text.slice(at, args);
  const callId = head.indexOf(CALL_ID);
  const name = (callId < 0 ? head : head.slice(0, callId)).trim();
  if (!FUNCTION_NAME.test(name)) return { state: 'invalid' };
  const start = skipWhitespace(text, args + ARGS.length);
  if (start === text.length && !final) return { state: 'calls', calls: [{ name, arguments: '', complete: false }], end: text.length, open: true };
  const object = scanArgumentsObject(text, start);
  if (object === null) return { state: 'invalid' };
  const call = { name, arguments: text.slice(start, object.end), complete: object.complete };
  return { state: 'calls', calls: [call], end: object.end, open: !object.complete };
}
