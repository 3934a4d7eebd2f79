import { openAiCallId } from './call-ids.ts';
import { oneOrMore, type CallableFunction } from './call-markup.ts';
import { couldBecome, parseMarkedCalls, skipWhitespace, type CallScan, type ToolCallFormat } from './output-parse.ts';
import { argumentsJson, openValue, readParameters, requiredParameterElements, type ParameterRead } from './parameter-markup.ts';

const OPEN = '<tool_call>';
const CLOSE = '</tool_call>';
const FUNCTION_OPEN = '<function=';
const FUNCTION_CLOSE = '</function>';
const PARAMETER_OPEN = '<parameter=';
const PARAMETER_CLOSE = '</parameter>';
const FUNCTION_NAME = /^[\w.-]*/;

/**
 * Qwen3-Coder, Qwen3.5 and Qwen3-Next: after any content, each call is
 * `<tool_call>\n<function=NAME>\n`, then per parameter `<parameter=KEY>\nVALUE\n</parameter>\n`,
 * then `</function>\n</tool_call>`. A value is bare text without the newline on either side of
 * it: the text itself for a string parameter, the JSON it parses as otherwise (see
 * parameter-markup.ts).
 */
export const qwen3CoderFormat: ToolCallFormat = {
  name: 'qwen3_coder',
  keepsSpecialTokens: false,
  hasChannels: false,
  newCallId: openAiCallId,
  parse(text, final, functions) {
    return parseMarkedCalls(text, final, OPEN, (at) => readCall(text, at, final, functions));
  },
  callsOnly(functions, parallel) {
    // As the chat templates write calls back: a newline between calls.
    const tags = functions.map((fn) => ({
      type: 'tag' as const,
      begin: `${OPEN}\n${FUNCTION_OPEN}${fn.name}>`,
      content: {
        type: 'sequence' as const,
        elements: [
          { type: 'const_string' as const, value: '\n' },
          ...requiredParameterElements(fn, PARAMETER_CLOSE, (key, value) => [
            { type: 'const_string', value: `${PARAMETER_OPEN}${key}>\n` },
            value,
            { type: 'const_string', value: `\n${PARAMETER_CLOSE}\n` },
          ]),
        ],
      },
      end: `${FUNCTION_CLOSE}\n${CLOSE}`,
    }));
    return oneOrMore(tags, '\n', parallel);
  },
};

/** A call from `at`, just after `<tool_call>`: a call once `<function=NAME>` is read. */
function readCall(text: string, at: number, final: boolean, functions: readonly CallableFunction[]): CallScan {
  const header = skipWhitespace(text, at);
  if (!text.startsWith(FUNCTION_OPEN, header)) {
    return !final && (header === text.length || couldBecome(text, header, FUNCTION_OPEN)) ? { state: 'pending' } : { state: 'invalid' };
  }
  const nameAt = header + FUNCTION_OPEN.length;
  const name = FUNCTION_NAME.exec(text.slice(nameAt))![0];
  const nameEnd = nameAt + name.length;
  if (nameEnd === text.length) return final ? { state: 'invalid' } : { state: 'pending' };
  if (name === '' || text[nameEnd] !== '>') return { state: 'invalid' };
  const body = readParameters(text, nameEnd + 1, final, PARAMETER_OPEN, FUNCTION_CLOSE, (p) => readParameter(text, p, final));
  let closed = body.state !== 'open';
  let end = body.at;
  if (body.state === 'closing') {
    const close = skipWhitespace(text, body.at + FUNCTION_CLOSE.length);
    if (text.startsWith(CLOSE, close)) end = close + CLOSE.length;
    else if (!final && (close === text.length || couldBecome(text, close, CLOSE))) closed = false;
    // A model that leaves `</tool_call>` out still made its call.
    else end = body.at + FUNCTION_CLOSE.length;
  }
  const fn = functions.find((f) => f.name === name);
  return { state: 'call', call: { name, arguments: argumentsJson(fn, body.params, closed, final), complete: closed }, end };
}

/** One `<parameter=KEY>\nVALUE\n</parameter>` from `at`. */
function readParameter(text: string, at: number, final: boolean): ParameterRead {
  const keyAt = at + PARAMETER_OPEN.length;
  const keyEnd = text.indexOf('>', keyAt);
  if (keyEnd < 0) return { state: 'open', param: null };
  const key = text.slice(keyAt, keyEnd).trim();
  const valueAt = keyEnd + 1;
  const close = text.indexOf(PARAMETER_CLOSE, valueAt);
  if (close >= 0) return { state: 'closed', param: { key, value: withoutNewlines(text.slice(valueAt, close)), closed: true }, end: close + PARAMETER_CLOSE.length };
  const raw = text.slice(valueAt);
  const value = openValue(raw.startsWith('\n') ? raw.slice(1) : raw, PARAMETER_CLOSE, final, (v) => (v.endsWith('\n') ? v.slice(0, -1) : v));
  return { state: 'open', param: { key, value, closed: false } };
}

/** The value between its tags, less the one newline the format writes on either side of it. */
function withoutNewlines(value: string): string {
  const start = value.startsWith('\n') ? 1 : 0;
  const end = value.length > start && value.endsWith('\n') ? value.length - 1 : value.length;
  return value.slice(start, end);
}
