import { ApiError, badRequest, toApiError } from '../openai-errors.ts';
import type { ChatMessage, Tokenizer, ToolDefinition } from '../../tokenizer/tokenizer.ts';
import type { ChatPromptEncoder } from './chat-prompt.ts';
import type { PreprocessSettings } from './preprocess-protocol.ts';

/** What a preprocessing thread holds: its settings and the model's tokenizer, if it has one. */
export interface PreprocessContext {
  settings: PreprocessSettings;
  chat: ChatPromptEncoder | null;
  /** The LoRA adapters served when the body being read was dispatched. */
  loraAdapters: readonly string[];
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
