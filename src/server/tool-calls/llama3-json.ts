import { openAiCallId } from './call-ids.ts';
import { callTags, jsonName, oneOrMore } from './call-markup.ts';
import { ParseBuilder, couldBecome, scanCallObject, skipWhitespace, type OutputParse, type ToolCallFormat } from './output-parse.ts';

const PYTHON_TAG = '<|python_tag|>';

/**
 * Llama 3.1 / 3.2 / 3.3 JSON tool calls: the reply is the call itself, `{"name": ...,
 * "parameters": {...}}` (several separated by `;`), perhaps after `<|python_tag|>`. A reply that
 * does not open with such an object is content; one opening with a JSON object is held back until
 * the object shows whether it is a call.
 */
export const llama3JsonFormat: ToolCallFormat = {
  name: 'llama3_json',
  keepsSpecialTokens: false,
  hasChannels: false,
  newCallId: openAiCallId,
  parse(text: string, final: boolean): OutputParse {
    const out = new ParseBuilder(final);
    let at = skipWhitespace(text, 0);
    if (text.startsWith(PYTHON_TAG, at)) at = skipWhitespace(text, at + PYTHON_TAG.length);
    else if (!final && couldBecome(text, at, PYTHON_TAG)) return out.result;
    if (!final && at === text.length) return out.result;
    if (text[at] !== '{') {
      out.content(text, false);
      return out.result;
    }
    for (;;) {
      const scan = scanCallObject(text, at, final);
      if (scan.state === 'pending') return out.result;
      if (scan.state === 'invalid') {
        if (out.result.calls.length === 0) out.content(text, false);
        else out.tail(text.slice(at), []);
        return out.result;
      }
      out.call(scan.call);
      if (!scan.call.complete) return out.result;
      const next = skipWhitespace(text, scan.end);
      if (text[next] === ';') at = skipWhitespace(text, next + 1);
      else {
        out.tail(text.slice(next), [';']);
        return out.result;
      }
      if (at === text.length) return out.result;
    }
  },
  callsOnly(functions, parallel) {
    return oneOrMore(callTags(functions, (name) => `{"name": ${jsonName(name)}, "parameters": `, '}'), '; ', parallel);
  },
};
