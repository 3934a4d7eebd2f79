import type { ChatMessageInput } from '../openai-schemas.ts';
import type { ResponsesInputItem, ResponsesTextFormat } from './responses-schemas.ts';

/**
 * A Responses request's input items as chat messages, the form chat templates read: function_call items become the tool calls of an assistant message (the one just
 * before them, if it is the assistant's), function_call_output items tool messages; reasoning
 * items are left out, as chat templates leave out past reasoning.
 */
export function inputMessages(input: ResponsesInputItem[]): ChatMessageInput[] {
  const messages: ChatMessageInput[] = [];
  for (const item of input) {
    switch (item.type) {
      case 'message':
        messages.push({ role: item.role, content: typeof item.content === 'string' ? item.content : item.content.map((p) => ('text' in p ? p.text : p.refusal)).join('\n') });
        break;
      case 'function_call': {
        const call = { id: item.call_id, type: 'function' as const, function: { name: item.name, arguments: item.arguments } };
        const last = messages.at(-1);
        if (last?.role === 'assistant') last.tool_calls = [...(last.tool_calls ?? []), call];
        else messages.push({ role: 'assistant', content: null, tool_calls: [call] });
        break;
      }
      case 'function_call_output':
        messages.push({ role: 'tool', tool_call_id: item.call_id, content: typeof item.output === 'string' ? item.output : item.output.map((p) => p.text).join('\n') });
        break;
      case 'reasoning':
        break;
    }
  }
  return messages;
}

/** text.format as chat completions' response_format, which the structured-output path reads. */
export function responseFormat(format: ResponsesTextFormat | null | undefined): Record<string, unknown> | undefined {
  if (format == null) return undefined;
  if (format.type !== 'json_schema') return { type: format.type };
  const { type, ...schema } = format;
  return { type, json_schema: schema };
}

/** Chat-completions field names in errors, as the Responses request spells them. */
const CHAT_TO_RESPONSES: [RegExp, string][] = [
  [/\bmax_completion_tokens\b/g, 'max_output_tokens'],
  [/\bresponse_format\b/g, 'text.format'],
  [/\bmessages\b/g, 'input'],
  [/\btools\[(\d+)\]\.function\b/g, 'tools[$1]'],
  [/\btool_choice\.function\b/g, 'tool_choice'],
];

export function responsesFieldNames(text: string): string {
  return CHAT_TO_RESPONSES.reduce((t, [pattern, name]) => t.replace(pattern, name), text);
}
