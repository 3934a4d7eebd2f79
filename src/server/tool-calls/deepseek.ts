import { openAiCallId } from './call-ids.ts';
import { callTags, oneOrMore } from './call-markup.ts';
import { ParseBuilder, couldBecome, scanArgumentsObject, skipWhitespace, type CallParse, type OutputParse, type ToolCallFormat } from './output-parse.ts';

const CALLS_BEGIN = '<｜tool▁calls▁begin｜>';
const CALLS_END = '<｜tool▁calls▁end｜>';
const CALL_BEGIN = '<｜tool▁call▁begin｜>';
const CALL_END = '<｜tool▁call▁end｜>';
const SEP = '<｜tool▁sep｜>';
const FENCE_END = '```';
const MARKERS = [CALL_BEGIN, CALLS_END, CALL_END, FENCE_END];
const FUNCTION_NAME = /^[\w.-]+$/;

type Call = { state: 'pending' | 'invalid' } | { state: 'call'; call: CallParse; end: number };

/**
 * DeepSeek V3 / R1 and V3.1 / V3.2: after any content, `<｜tool▁calls▁begin｜>`, then per call
 * `<｜tool▁call▁begin｜>` … `<｜tool▁call▁end｜>`, then `<｜tool▁calls▁end｜>`. Inside a call V3
 * writes `function<｜tool▁sep｜>NAME` and the arguments in a ```json fence; V3.1 writes
 * `NAME<｜tool▁sep｜>` and the arguments bare.
 */
export const deepseekFormat: ToolCallFormat = {
  name: 'deepseek',
  keepsSpecialTokens: true,
  hasChannels: false,
  newCallId: openAiCallId,
  parse(text: string, final: boolean): OutputParse {
    const out = new ParseBuilder(final);
    const begin = text.indexOf(CALLS_BEGIN);
    if (begin < 0) {
      out.tail(text, [CALLS_BEGIN]);
      return out.result;
    }
    out.content(text.slice(0, begin), true);
    let at = begin + CALLS_BEGIN.length;
    for (;;) {
      at = skipWhitespace(text, at);
      if (text.startsWith(CALLS_END, at)) {
        out.tail(text.slice(at + CALLS_END.length), []);
        return out.result;
      }
      // What closes a call: V3's closing fence, then the call's end marker.
      const closer = [FENCE_END, CALL_END].find((m) => text.startsWith(m, at));
      if (closer !== undefined) {
        at += closer.length;
        continue;
      }
      if (!text.startsWith(CALL_BEGIN, at)) {
        // Anything else: the model has left the format, and the rest is content.
        if (final || !MARKERS.some((m) => couldBecome(text, at, m))) out.tail(text.slice(at), []);
        return out.result;
      }
      const read = readCall(text, at + CALL_BEGIN.length, final);
      if (read.state !== 'call') {
        if (final) out.tail(text.slice(at), []);
        return out.result;
      }
      out.call(read.call);
      if (!read.call.complete) return out.result;
      at = read.end;
    }
  },
  callsOnly(functions, parallel, template) {
    // V3's template fences the arguments in ```json and puts a newline between calls.
    if (template?.includes('```json')) {
      const fenced = callTags(functions, (name) => `${CALL_BEGIN}function${SEP}${name}\n\`\`\`json\n`, `\n${FENCE_END}${CALL_END}`);
      return { type: 'tag', begin: CALLS_BEGIN, content: oneOrMore(fenced, '\n', parallel), end: CALLS_END };
    }
    // V3.1 writes calls back to back; xgrammar needs a separator, so each call's end and the next
    // one's begin are it (the first begin and the last end go around the calls).
    const bare = callTags(functions, (name) => `${name}${SEP}`, '');
    return { type: 'tag', begin: `${CALLS_BEGIN}${CALL_BEGIN}`, content: oneOrMore(bare, `${CALL_END}${CALL_BEGIN}`, parallel), end: `${CALL_END}${CALLS_END}` };
  },
};

/** One call's body from `at` (after its begin marker) through its end marker. */
function readCall(text: string, at: number, final: boolean): Call {
  const sep = text.indexOf(SEP, at);
  if (sep < 0) return final ? { state: 'invalid' } : { state: 'pending' };
  const head = text.slice(at, sep).trim();
  let name = head;
  let argsAt = sep + SEP.length;
  const fenced = head === 'function';
  if (fenced) {
    const newline = text.indexOf('\n', argsAt);
    if (newline < 0) return final ? { state: 'invalid' } : { state: 'pending' };
    name = text.slice(argsAt, newline).trim();
    argsAt = skipWhitespace(text, newline);
    if (text.startsWith('```json', argsAt)) argsAt += '```json'.length;
    else if (!final && couldBecome(text, argsAt, '```json')) return { state: 'pending' };
  }
  if (!FUNCTION_NAME.test(name)) return { state: 'invalid' };
  argsAt = skipWhitespace(text, argsAt);
  if (argsAt === text.length) return final ? { state: 'invalid' } : { state: 'call', call: { name, arguments: '', complete: false }, end: text.length };
  const object = scanArgumentsObject(text, argsAt);
  if (object === null) return { state: 'invalid' };
  return { state: 'call', call: { name, arguments: text.slice(argsAt, object.end), complete: object.complete }, end: object.end };
}
