import { ApiError, badRequest, toApiError } from '../openai-errors.ts';
import type { ChatMessage, Tokenizer, ToolDefinition } from '../../tokenizer/tokenizer.ts';
import type { ChatPromptEncoder, PreviousTurn } from './chat-prompt.ts';
import type { ChatContinuation, PreprocessSettings } from './preprocess-protocol.ts';

/** What a preprocessing thread holds: its settings and the model's tokenizer, if it has one. */
export interface PreprocessContext {
  settings: PreprocessSettings;
  chat: ChatPromptEncoder | null;
  /** The LoRA adapters served when the body being read was dispatched. */
  loraAdapters: readonly string[];
  /** The stored conversation the chat body being read continues, if any. */
  continuation: ChatContinuation | null;
}

export function requireTokenizer(ctx: PreprocessContext, param: string | null, purpose: string): Tokenizer {
  if (ctx.chat === null) throw badRequest(`this model has no tokenizer.json, so the server cannot ${purpose}: send token ids`, param);
  return ctx.chat.plain;
}

/** A chat's token ids; template errors name `messages`. */
export function encodeChat(ctx: PreprocessContext, messages: ChatMessage[], tools?: ToolDefinition[]): number[] {
  return renderChat(ctx, (chat) => chat.encode(messages, tools));
}

/**
 * A chat's token ids and the text they were read from, for a turn of a stored conversation: its
 * prompt starts with the previous turn's token ids where its text does.
 */
export function encodeChatTurn(ctx: PreprocessContext, previous: PreviousTurn | null, messages: ChatMessage[], tools?: ToolDefinition[]): { tokenIds: number[]; text: string } {
  return renderChat(ctx, (chat) => {
    const text = chat.render(messages, tools);
    return { tokenIds: previous === null ? chat.tokenize(text) : chat.tokenizeContinuing(text, previous), text };
  });
}

/** What `f` makes of the model's chat template; template errors name `messages`. */
function renderChat<T>(ctx: PreprocessContext, f: (chat: ChatPromptEncoder) => T): T {
  if (ctx.chat === null) throw badRequest('this model has no tokenizer.json, so the server cannot build a chat prompt: use /v1/completions with token ids', 'messages');
  try {
    return f(ctx.chat);
  } catch (error) {
    throw toApiError(error, 'messages');
  }
}

/**
 * The LoRA adapter a request's model names, or null for the base model (named, or not named at all:
 * OpenAI clients always name one). Any other name is a 404, as OpenAI answers.
 */
export function servedModel(ctx: PreprocessContext, model: string | null | undefined): string | null {
  const served = ctx.settings.servedModelName;
  if (model === null || model === undefined || model === served) return null;
  if (ctx.loraAdapters.includes(model)) return model;
  const names = [served, ...ctx.loraAdapters].map((name) => `\`${name}\``).join(', ');
  throw new ApiError(404, `The model \`${model}\` does not exist. This server serves ${names}.`, { param: 'model', code: 'model_not_found' });
}
