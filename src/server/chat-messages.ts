import type { LLM } from '../engine/llm.ts';
import type { ChatMessage } from '../tokenizer/tokenizer.ts';
import { toApiError } from './openai-errors.ts';
import type { ChatMessageInput } from './openai-schemas.ts';

/** Text parts are joined by newlines; "developer" (OpenAI's newer name for "system") becomes "system", the role chat templates know. */
export function toChatMessages(messages: ChatMessageInput[]): ChatMessage[] {
  return messages.map((m) => ({
    role: m.role === 'developer' ? 'system' : m.role,
    content: typeof m.content === 'string' ? m.content : (m.content ?? []).map((part) => part.text).join('\n'),
  }));
}

/** The prompt's token ids: the model's chat template over the messages, with the generation prompt. */
export function encodeMessages(llm: LLM, messages: ChatMessageInput[]): number[] {
  try {
    return llm.encodeChat(toChatMessages(messages));
  } catch (error) {
    throw toApiError(error, 'messages');
  }
}
