import type { ChatMessage } from '../tokenizer/tokenizer.ts';
import type { ChatMessageInput } from './openai-schemas.ts';

/** Text parts are joined by newlines; "developer" (OpenAI's newer name for "system") becomes "system", the role chat templates know. */
export function toChatMessages(messages: ChatMessageInput[]): ChatMessage[] {
  return messages.map((m) => ({
    role: m.role === 'developer' ? 'system' : m.role,
    content: typeof m.content === 'string' ? m.content : (m.content ?? []).map((part) => part.text).join('\n'),
  }));
}

