import { openAiCallId } from './call-ids.ts';
import { callTags, jsonName, oneOrMore } from './call-markup.ts';
import { ParseBuilder, couldBecome, scanCallObject, skipWhitespace, type OutputParse, type ToolCallFormat } from './output-parse.ts';

const OPEN = '<tool_call>';
const CLOSE = '</tool_call>';

/**
 * Hermes, and the Qwen 2.5 / Qwen 3 chat templates that took it up: each call is a JSON object
 * `{"name": ..., "arguments": {...}}` between `<tool_call>` and `</tool_call>`, after any content.
 */
export const hermesFormat: ToolCallFormat = {
  name: 'hermes',
  keepsSpecialTokens: false,
  hasChannels: false,
  newCallId: openAiCallId,
  parse(text: string, final: boolean): OutputParse {
    const out = new ParseBuilder(final);
    let segmentStart = 0;
    let searchFrom = 0;
    for (;;) {
      const open = text.indexOf(OPEN, searchFrom);
      if (open < 0) break;
      const scan = scanCallObject(text, skipWhitespace(text, open + OPEN.length), final);
      if (scan.state === 'invalid') {
        // Not a call after all: the marker is content like the text around it.
        searchFrom = open + OPEN.length;
        continue;
      }
      out.content(text.slice(segmentStart, open), true);
      if (scan.state === 'pending') return out.result;
      out.call(scan.call);
      if (!scan.call.complete) return out.result;
      const close = skipWhitespace(text, scan.end);
      if (text.startsWith(CLOSE, close)) segmentStart = close + CLOSE.length;
      else if (!final && couldBecome(text, close, CLOSE)) return out.result;
      // A model that leaves the closing tag out still made its call.
      else segmentStart = scan.end;
      searchFrom = segmentStart;
    }
    out.tail(text.slice(segmentStart), [OPEN]);
    return out.result;
  },
  callsOnly(functions, parallel) {
    // As Qwen's templates write calls back: one block per call, a newline between blocks.
    return oneOrMore(callTags(functions, (name) => `${OPEN}\n{"name": ${jsonName(name)}, "arguments": `, `}\n${CLOSE}`), '\n', parallel);
  },
};
