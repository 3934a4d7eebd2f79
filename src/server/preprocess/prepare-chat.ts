import { messageBytes, toChatMessages } from '../chat-messages.ts';
import { readJsonBody } from '../json-body.ts';
import { badRequest } from '../openai-errors.ts';
import { commonSamplingFields, maxTokensBound, maxTokensField, resolveRequestParams, type RequestField } from '../openai-sampling.ts';
import { ChatCompletionRequest, parseBody } from '../openai-schemas.ts';
import { structuredOutputField } from '../structured-output-request.ts';
import { encodeChat, encodeChatTurn, servedModel, type PreprocessContext } from './preprocess-context.ts';
import type { PreparedChat } from './preprocess-protocol.ts';
import { toolCallFormat } from '../tool-calls/tool-call-formats.ts';
import { checkCallsOnly, toolUse } from './tool-use.ts';
import { checkN, checkPromptBytes, checkPromptTokens, checkSequences } from './request-limits.ts';

/** A /v1/chat/completions body, ready for the engine: the chat template over its messages, tokenized. */
export async function prepareChat(ctx: PreprocessContext, raw: Uint8Array): Promise<PreparedChat> {
  const body = parseBody(ChatCompletionRequest, readJsonBody(raw));
  const lora = servedModel(ctx, body.model);
  if (body.top_logprobs !== null && body.top_logprobs !== undefined && body.logprobs !== true) {
    throw badRequest('top_logprobs needs logprobs: true', 'top_logprobs');
  }
  const { limits, maxModelLen, samplingDefaults, vocabSize } = ctx.settings;
  const maxTokensName = body.max_completion_tokens !== null && body.max_completion_tokens !== undefined ? 'max_completion_tokens' : 'max_tokens';
  const maxTokens = body.max_completion_tokens ?? body.max_tokens;
  const parser = ctx.settings.toolCallParser === null ? null : (toolCallFormat(ctx.settings.toolCallParser) ?? null);
  const tools = toolUse(body, parser, ctx.chat?.plain.chatTemplateSource ?? null);
  const structured = await structuredOutputField(body);
  if (tools.callsOnly !== null) {
    if (structured !== null) {
      throw badRequest(`${structured.name} cannot be combined with tool_choice ${JSON.stringify(body.tool_choice)}, which constrains the output to tool calls`, structured.name);
    }
    await checkCallsOnly(tools.callsOnly);
  }
  const constraint = tools.callsOnly !== null ? { name: 'tool_choice', field: 'structuredOutput' as const, value: tools.callsOnly.spec } : structured;
  const fields: RequestField[] = [
    ...commonSamplingFields(body),
    { name: 'top_logprobs', field: 'logprobs', value: body.logprobs === true ? (body.top_logprobs ?? 0) : null },
    ...(constraint ? [constraint] : []),
  ];
  const checked = resolveRequestParams([...fields, maxTokensBound(maxTokensName, maxTokens, null, maxModelLen)], samplingDefaults, vocabSize);
  checkN(checked.n, limits);
  checkSequences(1, checked.n, limits);
  const messages = toChatMessages(body.messages);
  checkPromptBytes(messageBytes(messages) + (tools.tools ? Buffer.byteLength(JSON.stringify(tools.tools)) : 0), limits, 'messages');
  const turn = ctx.continuation === null ? null : encodeChatTurn(ctx, ctx.continuation.previous, messages, tools.tools);
  const tokenIds = turn?.tokenIds ?? encodeChat(ctx, messages, tools.tools);
  const params = resolveRequestParams([...fields, maxTokensField(maxTokensName, maxTokens, null, tokenIds.length, maxModelLen, 'messages')], samplingDefaults, vocabSize);
  checkPromptTokens(tokenIds.length, limits, 'messages');
  return {
    prompt: { tokenIds, params: tools.keepSpecialTokens ? { ...params, skipSpecialTokens: false } : params, lora },
    stream: body.stream === true,
    includeUsage: body.stream_options?.include_usage === true,
    reading: tools.reading,
    ...(turn ? { promptText: turn.text } : {}),
  };
}
