import { toChatMessages } from '../chat-messages.ts';
import { readJsonBody } from '../json-body.ts';
import { badRequest } from '../openai-errors.ts';
import { DetokenizeRequest, TokenizeRequest, parseBody } from '../openai-schemas.ts';
import { encodeChat, servedModel, requireTokenizer, type PreprocessContext } from './preprocess-context.ts';
import type { DetokenizeAnswer, TokenizeAnswer } from './preprocess-protocol.ts';
import { checkPromptBytes } from './request-limits.ts';

/** POST /tokenize: the token ids the engine would see for a prompt, or for a chat's messages. */
export function tokenizeAnswer(ctx: PreprocessContext, raw: Uint8Array): TokenizeAnswer {
  const body = parseBody(TokenizeRequest, readJsonBody(raw));
  servedModel(ctx, body.model);
  if ((body.prompt === undefined) === (body.messages === undefined)) throw badRequest('send either prompt or messages', 'prompt');
  let tokens: number[];
  if (body.prompt !== undefined) {
    checkPromptBytes(Buffer.byteLength(body.prompt), ctx.settings.limits, 'prompt');
    tokens = requireTokenizer(ctx, 'prompt', 'tokenize text').encode(body.prompt, { addSpecialTokens: body.add_special_tokens ?? true });
  } else {
    const messages = toChatMessages(body.messages ?? []);
    checkPromptBytes(
      messages.reduce((sum, m) => sum + Buffer.byteLength(m.content), 0),
      ctx.settings.limits,
      'messages',
    );
    tokens = encodeChat(ctx, messages);
  }
  return { tokens, count: tokens.length, max_model_len: ctx.settings.maxModelLen };
}

/** POST /detokenize: the text of token ids, special tokens kept. */
export function detokenizeAnswer(ctx: PreprocessContext, raw: Uint8Array): DetokenizeAnswer {
  const body = parseBody(DetokenizeRequest, readJsonBody(raw));
  servedModel(ctx, body.model);
  const { vocabSize } = ctx.settings;
  const outside = body.tokens.findIndex((id) => id >= vocabSize);
  if (outside >= 0) throw badRequest(`tokens[${outside}] = ${body.tokens[outside]} is outside the vocabulary (0..${vocabSize - 1})`, `tokens[${outside}]`);
  return { prompt: requireTokenizer(ctx, null, 'detokenize').decode(body.tokens, { skipSpecialTokens: false }) };
}
