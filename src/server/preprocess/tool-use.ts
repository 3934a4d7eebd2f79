import { KeelError } from '../../errors.ts';
import type { StructuredOutput } from '../../sampling/structured-output.ts';
import { checkStructuredOutput } from '../../structured/grammar-check.ts';
import type { ToolDefinition } from '../../tokenizer/tokenizer.ts';
import { badRequest } from '../openai-errors.ts';
import type { ChatToolChoice, ChatToolInput } from '../openai-schemas.ts';
import type { CallableFunction } from '../tool-calls/call-markup.ts';
import type { ToolCallFormat } from '../tool-calls/output-parse.ts';
import type { CallFilter } from '../tool-calls/parsed-output-stream.ts';
import { TOOL_CALL_PARSERS } from '../tool-calls/tool-call-formats.ts';

/** How a chat's output is read: by the tool-call parser, answering the calls `calls` lets through (null: none, no tools were offered). */
export interface OutputReading {
  calls: CallFilter | null;
}

export interface ToolUse {
  /** What the chat template shows the model; undefined when it is not to call any. */
  tools: ToolDefinition[] | undefined;
  /** null: the output is plain content. */
  reading: OutputReading | null;
  /** The parser's markup is special tokens, which the detokenizer must keep. */
  keepSpecialTokens: boolean;
  /**
   * `tool_choice` "required" or a named function: the output is made of calls and nothing else,
   * in the parser's markup with each function's parameter schema inside (null otherwise).
   */
  callsOnly: { spec: StructuredOutput; functions: { index: number; fn: CallableFunction }[] } | null;
}

/** A function declared without parameters takes none: its arguments are `{}`. */
const NO_PARAMETERS = { type: 'object', properties: {} };

/**
 * What a request's `tools`, `tool_choice` and `parallel_tool_calls` ask for, under the server's
 * tool-call parser. `tool_choice: "none"` is accepted with any tools and ignores them (agent
 * frameworks always send theirs). `required` and a named function constrain the output to calls
 * (to the named one only), `parallel_tool_calls: false` to one call; `auto` leaves the model free.
 * `template` is the chat template's source (a format's markup may depend on the model version).
 */
export function toolUse(
  request: { tools?: ChatToolInput[] | null; tool_choice?: ChatToolChoice | null; parallel_tool_calls?: boolean | null },
  parser: ToolCallFormat | null,
  template: string | null,
): ToolUse {
  const tools = request.tools ?? [];
  const choice = request.tool_choice ?? (tools.length > 0 ? 'auto' : 'none');
  const names = tools.map((t) => t.function.name);
  const repeated = names.findIndex((name, i) => names.indexOf(name) !== i);
  if (repeated >= 0) throw badRequest(`tools[${repeated}]: the function name "${names[repeated]}" is given twice`, `tools[${repeated}].function.name`);
  const channelsOnly = { tools: undefined, reading: parser?.hasChannels ? { calls: null } : null, keepSpecialTokens: parser?.hasChannels === true, callsOnly: null };
  // "auto" with nothing to call is no tool use either.
  if (choice === 'none' || (choice === 'auto' && tools.length === 0)) return channelsOnly;
  if (tools.length === 0) throw badRequest(`tool_choice ${JSON.stringify(choice)} needs tools to choose from`, 'tool_choice');
  const onlyName = typeof choice === 'object' ? choice.function.name : null;
  if (onlyName !== null && !names.includes(onlyName)) throw badRequest(`tool_choice names the function "${onlyName}", which is not among the tools (${names.join(', ')})`, 'tool_choice');
  if (parser === null) {
    throw badRequest(
      `this model's chat template shows no tool-call format Keel recognizes, so its calls could not be read: start keel serve with --tool-call-parser (${TOOL_CALL_PARSERS.join(', ')}), or send tool_choice "none"`,
      'tools',
    );
  }
  const parallel = request.parallel_tool_calls ?? true;
  const offered: CallableFunction[] = tools.map((t) => ({ name: t.function.name, parameters: t.function.parameters ?? NO_PARAMETERS }));
  let callsOnly: ToolUse['callsOnly'] = null;
  if (choice !== 'auto') {
    const functions = offered.flatMap((fn, index) => (onlyName === null || fn.name === onlyName ? [{ index, fn }] : []));
    const format = parser.callsOnly(
      functions.map((f) => f.fn),
      parallel,
      template,
    );
    callsOnly = { spec: { type: 'structural_tag', format }, functions };
  }
  return {
    tools: tools.map((t) => ({ type: 'function', function: definedFields(t.function) })),
    reading: { calls: { onlyName, parallel, functions: offered } },
    keepSpecialTokens: parser.keepsSpecialTokens,
    callsOnly,
  };
}

/**
 * Checks, before the request is queued, that xgrammar can constrain the calls: each function's
 * parameter schema first (a 400 naming `tools[i].function.parameters` and what is wrong), then the
 * whole markup.
 */
export async function checkCallsOnly(callsOnly: NonNullable<ToolUse['callsOnly']>): Promise<void> {
  for (const { index, fn } of callsOnly.functions) {
    const param = `tools[${index}].function.parameters`;
    await asBadRequest(checkStructuredOutput({ type: 'json_schema', schema: fn.parameters }), param, `the parameters of "${fn.name}": `);
  }
  await asBadRequest(checkStructuredOutput(callsOnly.spec), 'tool_choice', 'the tool-call markup cannot be constrained: ');
}

async function asBadRequest(check: Promise<void>, param: string, prefix: string): Promise<void> {
  try {
    await check;
  } catch (error) {
    if (error instanceof KeelError && error.kind === 'invalid_argument') throw badRequest(`${param}: ${prefix}${error.message}`, param);
    throw error;
  }
}

/** A function's fields without the nulls a client may send, which templates would print. */
function definedFields(fn: ChatToolInput['function']): ToolDefinition['function'] {
  return {
    name: fn.name,
    ...(fn.description != null ? { description: fn.description } : {}),
    ...(fn.parameters != null ? { parameters: fn.parameters } : {}),
  };
}
