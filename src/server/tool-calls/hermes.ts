import { openAiCallId } from './call-ids.ts';
import { callTags, jsonName, oneOrMore } from './call-markup.ts';
import { couldBecome, parseMarkedCalls, scanCallObject, skipWhitespace, type CallScan, type OutputParse, type ToolCallFormat } from './output-parse.ts';

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
    return parseMarkedCalls(text, final, OPEN, (at) => readCall(text, at, final));
  },
  callsOnly(functions, parallel) {
    // As Qwen's templates write calls back: one block per call, a newline between blocks.
    return oneOrMore(callTags(functions, (name) => `${OPEN}\n{"name": ${jsonName(name)}, "arguments": `, `}\n${CLOSE}`), '\n', parallel);
  },
};

/** A call's JSON object from `at` (after `<tool_call>`), through its closing tag. */
function readCall(text: string, at: number, final: boolean): CallScan {
  const scan = scanCallObject(text, skipWhitespace(text, at), final);
  if (scan.state !== 'call' || !scan.call.complete) return scan;
  const close = skipWhitespace(text, scan.end);
  if (text.startsWith(CLOSE, close)) return { ...scan, end: close + CLOSE.length };
  // What may yet be the closing tag is held back; a model that leaves the tag out still made its call.
  return { ...scan, end: !final && couldBecome(text, close, CLOSE) ? text.length : scan.end };
}
