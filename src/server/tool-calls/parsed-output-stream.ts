import type { CallableFunction } from './call-markup.ts';
import type { OutputParse, ToolCallFormat } from './output-parse.ts';

/** Which of the calls the model wrote are answered: all, the first only, or those to one function. */
export interface CallFilter {
  /** The functions offered, whose parameter schemas say how formats with bare-text values read them. */
  functions: readonly CallableFunction[];
  /** Only calls to this function (tool_choice naming one). */
  onlyName: string | null;
  /** parallel_tool_calls: false keeps the first call. */
  parallel: boolean;
}

/** One call's new part: its id, type and name the first time it shows, then more of its arguments. */
export interface ToolCallDelta {
  index: number;
  id?: string;
  type?: 'function';
  function: { name?: string; arguments: string };
}

export interface ParsedDelta {
  content: string;
  reasoning: string;
  toolCalls: ToolCallDelta[];
}

export interface ParsedToolCall {
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
}

/** A whole output, read: content null when there is none. */
export interface ParsedMessage {
  content: string | null;
  reasoning: string | null;
  toolCalls: ParsedToolCall[];
}

/**
 * A completion's output read as it streams in: each `push` of new text answers what it added to
 * the content, the reasoning and the tool calls (as the deltas OpenAI streams, which the SDKs
 * assemble); markup is never shown as content. `finish` releases what was held back.
 */
export class ParsedOutputStream {
  private readonly format: ToolCallFormat;
  /** null: no tools were offered, and calls are not answered. */
  private readonly filter: CallFilter | null;
  private text = '';
  private shownContent = 0;
  private shownReasoning = 0;
  private readonly shownCalls: { id: string; arguments: number }[] = [];

  constructor(format: ToolCallFormat, filter: CallFilter | null) {
    this.format = format;
    this.filter = filter;
  }

  push(text: string): ParsedDelta {
    this.text += text;
    return this.advance(this.format.parse(this.text, false, this.functions));
  }

  finish(): ParsedDelta {
    return this.advance(this.format.parse(this.text, true, this.functions));
  }

  /** A whole output, read at once. */
  static read(format: ToolCallFormat, filter: CallFilter | null, text: string): ParsedMessage {
    const stream = new ParsedOutputStream(format, filter);
    stream.text = text;
    return stream.message();
  }

  /** The whole output so far as one message, with the ids its streamed calls were given. */
  message(): ParsedMessage {
    const parse = this.format.parse(this.text, true, this.functions);
    const calls = this.kept(parse);
    return {
      content: calls.length > 0 && parse.content.trim() === '' ? null : parse.content,
      reasoning: parse.reasoning === '' ? null : parse.reasoning,
      toolCalls: calls.map((call, i) => ({ id: this.shownCalls[i]?.id ?? this.format.newCallId(), type: 'function', function: { name: call.name, arguments: call.arguments } })),
    };
  }

  private get functions(): readonly CallableFunction[] {
    return this.filter?.functions ?? [];
  }

  /** Whether a call has been shown. */
  get madeCalls(): boolean {
    return this.shownCalls.length > 0;
  }

  private kept(parse: OutputParse): OutputParse['calls'] {
    const filter = this.filter;
    if (filter === null) return [];
    const calls = filter.onlyName === null ? parse.calls : parse.calls.filter((c) => c.name === filter.onlyName);
    return filter.parallel ? calls : calls.slice(0, 1);
  }

  private advance(parse: OutputParse): ParsedDelta {
    const delta: ParsedDelta = { content: parse.content.slice(this.shownContent), reasoning: parse.reasoning.slice(this.shownReasoning), toolCalls: [] };
    this.shownContent = Math.max(this.shownContent, parse.content.length);
    this.shownReasoning = Math.max(this.shownReasoning, parse.reasoning.length);
    this.kept(parse).forEach((call, index) => {
      let shown = this.shownCalls[index];
      if (shown === undefined) {
        shown = { id: this.format.newCallId(), arguments: 0 };
        this.shownCalls.push(shown);
        delta.toolCalls.push({ index, id: shown.id, type: 'function', function: { name: call.name, arguments: call.arguments } });
      } else if (call.arguments.length > shown.arguments) {
        delta.toolCalls.push({ index, function: { arguments: call.arguments.slice(shown.arguments) } });
      }
      shown.arguments = Math.max(shown.arguments, call.arguments.length);
    });
    return delta;
  }
}
