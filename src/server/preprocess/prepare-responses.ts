import { readJsonBody } from '../json-body.ts';
import { parseBody } from '../openai-schemas.ts';
import { listedInputItems } from '../responses/input-items.ts';
import { inputMessages, responseFormat } from '../responses/responses-input.ts';
import { ResponsesRequest } from '../responses/responses-schemas.ts';
import { servedModel, type PreprocessContext } from './preprocess-context.ts';
import type { PreparedResponses } from './preprocess-protocol.ts';

export function prepareResponses(ctx: PreprocessContext, raw: Uint8Array): PreparedResponses {
  const body = parseBody(ResponsesRequest, readJsonBody(raw));
  servedModel(ctx, body.model);
  const tools = body.tools ?? [];
  const toolChoice = body.tool_choice ?? (tools.length > 0 ? 'auto' : 'none');
  const chat = {
    model: body.model,
    max_completion_tokens: body.max_output_tokens,
    temperature: body.temperature,
    top_p: body.top_p,
    tools: tools.map(({ type, ...fn }) => ({ type, function: fn })),
    tool_choice: typeof toolChoice === 'object' ? { type: 'function', function: { name: toolChoice.name } } : toolChoice,
    parallel_tool_calls: body.parallel_tool_calls,
    response_format: responseFormat(body.text?.format),
    stream: body.stream,
  };
  return {
    chat,
    input: inputMessages(body.input),
    inputItems: listedInputItems(body.input),
    instructions: body.instructions ?? null,
    previousResponseId: body.previous_response_id ?? null,
    store: body.store ?? true,
    stream: body.stream === true,
    echo: {
      instructions: body.instructions ?? null,
      tools: tools.map((t) => ({ ...t, description: t.description ?? null, parameters: t.parameters ?? null, strict: t.strict ?? null })),
      tool_choice: body.tool_choice ?? 'auto',
      parallel_tool_calls: body.parallel_tool_calls ?? true,
      text: { format: body.text?.format ?? { type: 'text' } },
      metadata: body.metadata ?? {},
      user: body.user ?? null,
      truncation: 'disabled',
      reasoning: { effort: null, summary: null },
      background: false,
      service_tier: 'default',
      top_logprobs: 0,
    },
  };
}
