import { openAiCallId } from './call-ids.ts';
import { oneOrMore, type CallableFunction } from './call-markup.ts';
import { couldBecome, parseMarkedCalls, skipWhitespace, type CallScan, type ToolCallFormat } from './output-parse.ts';
import { argumentsJson, openValue, readParameters, requiredParameterElements, type ParameterRead } from './parameter-markup.ts';

const OPEN = '<tool_call>';
const CLOSE = '</tool_call>';
const KEY_OPEN = '<arg_key>';
const KEY_CLOSE = '</arg_key>';
const VALUE_OPEN = '<arg_value>';
const VALUE_CLOSE = '</arg_value>';
const FUNCTION_NAME = /^[\w.-]*/;

/**
 * GLM-4.5, 4.6, 4.7 and GLM-5: after any content, each call is `<tool_call>NAME`, then per
 * argument `<arg_key>KEY</arg_key><arg_value>VALUE</arg_value>`, then `</tool_call>` (4.5 and 4.6
 * put a newline after the name and after each tag, 4.7 none). A value is bare text, trimmed: the
 * text itself for a string parameter, the JSON it parses as otherwise (see parameter-markup.ts).
 */
export const glm45Format: ToolCallFormat = {
  name: 'glm45',
  keepsSpecialTokens: false,
  hasChannels: false,
  newCallId: openAiCallId,
  parse(text, final, functions) {
    return parseMarkedCalls(text, final, OPEN, (at) => readCall(text, at, final, functions));
  },
  callsOnly(functions, parallel, template) {
    // 4.7's template writes the markup without newlines (`</arg_key><arg_value>`), as 4.7 writes it.
    const newline = template?.includes(`${KEY_CLOSE}${VALUE_OPEN}`) ? '' : '\n';
    const tags = functions.map((fn) => ({
      type: 'tag' as const,
      begin: OPEN,
      content: {
        type: 'sequence' as const,
        elements: [
          { type: 'const_string' as const, value: `${fn.name}${newline}` },
          ...requiredParameterElements(fn, VALUE_CLOSE, (key, value) => [
            { type: 'const_string', value: `${KEY_OPEN}${key}${KEY_CLOSE}${newline}${VALUE_OPEN}` },
            value,
            { type: 'const_string', value: `${VALUE_CLOSE}${newline}` },
          ]),
        ],
      },
      end: CLOSE,
    }));
    return oneOrMore(tags, '\n', parallel);
  },
};

/** A call from `at`, just after `<tool_call>`: a call once its name is followed by an argument or the closing tag. */
function readCall(text: string, at: number, final: boolean, functions: readonly CallableFunction[]): CallScan {
  const nameAt = skipWhitespace(text, at);
  const name = FUNCTION_NAME.exec(text.slice(nameAt))![0];
  const next = skipWhitespace(text, nameAt + name.length);
  if (next === text.length) return final ? { state: 'invalid' } : { state: 'pending' };
  if (!text.startsWith(KEY_OPEN, next) && !text.startsWith(CLOSE, next)) {
    return !final && (couldBecome(text, next, KEY_OPEN) || couldBecome(text, next, CLOSE)) ? { state: 'pending' } : { state: 'invalid' };
  }
  if (name === '') return { state: 'invalid' };
  const body = readParameters(text, next, final, KEY_OPEN, CLOSE, (p) => readArgument(text, p, final));
  const closed = body.state !== 'open';
  const end = body.state === 'closing' ? body.at + CLOSE.length : body.at;
  const fn = functions.find((f) => f.name === name);
  return { state: 'call', call: { name, arguments: argumentsJson(fn, body.params, closed, final), complete: closed }, end };
}

/** One `<arg_key>…</arg_key><arg_value>…</arg_value>` from `at`. */
function readArgument(text: string, at: number, final: boolean): ParameterRead {
  const keyAt = at + KEY_OPEN.length;
  const keyEnd = text.indexOf(KEY_CLOSE, keyAt);
  if (keyEnd < 0) return { state: 'open', param: null };
  const key = text.slice(keyAt, keyEnd).trim();
  const valueTag = skipWhitespace(text, keyEnd + KEY_CLOSE.length);
  if (!text.startsWith(VALUE_OPEN, valueTag)) {
    const mayGrow = !final && (valueTag === text.length || couldBecome(text, valueTag, VALUE_OPEN));
    return mayGrow ? { state: 'open', param: null } : { state: 'stray' };
  }
  const valueAt = valueTag + VALUE_OPEN.length;
  const close = text.indexOf(VALUE_CLOSE, valueAt);
  if (close >= 0) return { state: 'closed', param: { key, value: text.slice(valueAt, close).trim(), closed: true }, end: close + VALUE_CLOSE.length };
  return { state: 'open', param: { key, value: openValue(text.slice(valueAt).trimStart(), VALUE_CLOSE, final, (v) => v.trimEnd()), closed: false } };
}
