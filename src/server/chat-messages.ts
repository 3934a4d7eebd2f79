import type { ChatMessage } from '../tokenizer/tokenizer.ts';
import type { ChatMessageInput } from './openai-schemas.ts';

/**
 * Messages as chat templates read them. Text parts are joined by newlines; "developer" (OpenAI's
 * newer name for "system") becomes "system", the role chat templates know; tool calls' arguments
 * are decoded from their JSON string, as templates expect them (one that is not JSON stays a string).
 */
export function toChatMessages(messages: ChatMessageInput[]): ChatMessage[] {
  return messages.map((m) => {
    const message: ChatMessage = {
      role: m.role === 'developer' ? 'system' : m.role,
      content: typeof m.content === 'string' ? m.content : (m.content ?? []).map((part) => part.text).join('\n'),
    };
    if (m.tool_calls) {
      message.tool_calls = m.tool_calls.map((call) => ({ id: call.id, type: 'function', function: { name: call.function.name, arguments: decodeArguments(call.function.arguments) } }));
    }
    if (m.tool_call_id != null) message.tool_call_id = m.tool_call_id;
    if (m.name != null) message.name = m.name;
    return message;
  });
}

function decodeArguments(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

/** The bytes a client wrote into messages (contents, calls), checked against the prompt-bytes limit. */
export function messageBytes(messages: ChatMessage[]): number {
  return messages.reduce((sum, m) => sum + Buffer.byteLength(m.content) + (m.tool_calls ? Buffer.byteLength(JSON.stringify(m.tool_calls)) : 0), 0);
}
