import { ApiError, badRequest, toApiError } from '../openai-errors.ts';
import type { ChatMessage, Tokenizer, ToolDefinition } from '../../tokenizer/tokenizer.ts';
import type { ChatPromptEncoder } from './chat-prompt.ts';
import type { PreprocessSettings } from './preprocess-protocol.ts';

/** What a preprocessing thread holds: its settings and the model's tokenizer, if it has one. */
export interface PreprocessContext {
  settings: PreprocessSettings;
  chat: ChatPromptEncoder | null;
}

export function requireTokenizer(ctx: PreprocessContext, param: string | null, purpose: string): Tokenizer {
  if (ctx.chat === null) throw badRequest(`this model has no tokenizer.json, so the server cannot ${purpose}: send token ids`, param);
  return ctx.chat.plain;
}

/** A chat's token ids; template errors name `messages`. */
export function encodeChat(ctx: PreprocessContext, messages: ChatMessage[], tools?: ToolDefinition[]): number[] {
  if (ctx.chat === null) throw badRequest('this model has no tokenizer.json, so the server cannot build a chat prompt: use /v1/completions with token ids', 'messages');
  try {
    return ctx.chat.encode(messages, tools);
  } catch (error) {
    throw toApiError(error, 'messages');
  }
}

/** A request may name the model (OpenAI clients always do); naming another one is a 404, as OpenAI answers. */
export function ensureServedModel(ctx: PreprocessContext, model: string | null | undefined): void {
  const served = ctx.settings.servedModelName;
  if (model === null || model === undefined || model === served) return;
  throw new ApiError(404, `The model \`${model}\` does not exist. This server serves \`${served}\`.`, { param: 'model', code: 'model_not_found' });
}
