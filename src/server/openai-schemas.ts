import { z } from 'zod';
import { badRequest } from './openai-errors.ts';
import { structuredOutputFields } from './structured-output-request.ts';

/**
 * Request bodies of the OpenAI endpoints Keel serves. Shapes and types are checked here; value
 * ranges are the sampling validator's (openai-sampling.ts), so they have one source of truth.
 * Unknown fields are rejected as OpenAI rejects them. OpenAI fields Keel does not implement are
 * accepted where ignoring them changes nothing (`user`, `store`...)
 * and rejected where ignoring them would silently answer a different question (`suffix`).
 */

const number = z.number().nullish();
const integerArray = z.array(z.number().int().min(0));

/** Sampling fields shared by both endpoints, with the vLLM extensions. */
const samplingFields = {
  model: z.string().nullish(),
  n: number,
  temperature: number,
  top_p: number,
  top_k: number,
  min_p: number,
  presence_penalty: number,
  frequency_penalty: number,
  repetition_penalty: number,
  seed: number,
  stop: z.union([z.string(), z.array(z.string())], { error: 'must be a string, an array of strings or null' }).nullish(),
  max_tokens: number,
  stream: z.boolean().nullish(),
  stream_options: z.strictObject({ include_usage: z.boolean().nullish(), include_obfuscation: z.boolean().nullish() }).nullish(),
  logit_bias: z.record(z.string(), z.number()).nullish(),
  allowed_token_ids: integerArray.nullish(),
  bad_words: z.array(z.string()).nullish(),
  user: z.string().nullish(),
  ignore_eos: z.boolean().nullish(),
  stop_token_ids: integerArray.nullish(),
  min_tokens: number,
  include_stop_str_in_output: z.boolean().nullish(),
  skip_special_tokens: z.boolean().nullish(),
  use_beam_search: z.boolean().nullish(),
  beam_width: number,
  length_penalty: number,
  early_stopping: z.union([z.boolean(), z.literal('never')], { error: 'must be true, false or "never"' }).nullish(),
  ...structuredOutputFields,
};

const textPart = z.strictObject({ type: z.literal('text'), text: z.string() });

const FUNCTION_NAME = /^[\w.-]{1,64}$/;
const functionName = z.string().regex(FUNCTION_NAME, 'must be 1 to 64 letters, digits, underscores, dots or dashes');

/** A call an assistant message made, as the client sends it back: arguments as a JSON string. */
const toolCallInput = z.strictObject({
  id: z.string(),
  type: z.literal('function', { error: 'must be "function"' }),
  function: z.strictObject({ name: z.string(), arguments: z.string() }),
});

const message = z
  .strictObject({
    role: z.enum(['system', 'developer', 'user', 'assistant', 'tool'], {
      error: 'must be "system", "developer", "user", "assistant" or "tool"',
    }),
    content: z.union([z.string(), z.array(textPart)], { error: 'must be a string or an array of {"type": "text", "text": ...} parts' }).nullish(),
    name: z.string().nullish(),
    tool_calls: z.array(toolCallInput).nullish(),
    tool_call_id: z.string().nullish(),
    refusal: z.string().nullish(),
  })
  .refine((m) => (m.content !== null && m.content !== undefined) || m.role === 'assistant', { message: 'content may be null only in an assistant message', path: ['content'] })
  .refine((m) => !m.tool_calls || m.role === 'assistant', { message: 'only assistant messages make tool calls', path: ['tool_calls'] })
  .refine((m) => m.role !== 'tool' || typeof m.tool_call_id === 'string', { message: 'a tool message needs the tool_call_id of the call it answers', path: ['tool_call_id'] });

export type ChatMessageInput = z.infer<typeof message>;

export const chatMessages = z.array(message).min(1, 'must hold at least one message');

/** A function the model may call; its parameters are a JSON Schema. */
export const functionDefinition = z.strictObject({
  name: functionName,
  description: z.string().nullish(),
  parameters: z.record(z.string(), z.unknown(), { error: 'must be a JSON Schema object' }).nullish(),
  strict: z.boolean().nullish(),
});

const chatTool = z.strictObject({
  type: z.literal('function', { error: 'must be "function" (the only kind of tool Keel calls)' }),
  function: functionDefinition,
});
export type ChatToolInput = z.infer<typeof chatTool>;

const chatToolChoice = z.union([z.enum(['none', 'auto', 'required']), z.strictObject({ type: z.literal('function'), function: z.strictObject({ name: z.string() }) })], {
  error: 'must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}',
});
export type ChatToolChoice = z.infer<typeof chatToolChoice>;

export const ChatCompletionRequest = z.strictObject({
  ...samplingFields,
  messages: chatMessages,
  max_completion_tokens: number,
  logprobs: z.boolean().nullish(),
  top_logprobs: number,
  tools: z.array(chatTool).nullish(),
  tool_choice: chatToolChoice.nullish(),
  parallel_tool_calls: z.boolean().nullish(),
  modalities: z.array(z.literal('text', { error: 'only the "text" modality is supported' })).nullish(),
  store: z.boolean().nullish(),
  metadata: z.record(z.string(), z.string()).nullish(),
  service_tier: z.string().nullish(),
  reasoning_effort: z.string().nullish(),
  verbosity: z.string().nullish(),
  prompt_cache_key: z.string().nullish(),
  safety_identifier: z.string().nullish(),
});
export type ChatCompletionRequest = z.infer<typeof ChatCompletionRequest>;

export const CompletionPrompt = z.union([z.string(), z.array(z.string()).min(1), integerArray.min(1), z.array(integerArray.min(1)).min(1)], {
  error: 'must be a string, an array of strings, an array of token ids or an array of token-id arrays (none empty)',
});
export type CompletionPrompt = z.infer<typeof CompletionPrompt>;

export const CompletionRequest = z.strictObject({
  ...samplingFields,
  prompt: CompletionPrompt,
  echo: z.boolean().nullish(),
  logprobs: number,
  best_of: number,
  suffix: z.string().max(0, 'suffix is not supported').nullish(),
});
export type CompletionRequest = z.infer<typeof CompletionRequest>;

export const TokenizeRequest = z.strictObject({
  model: z.string().nullish(),
  prompt: z.string().optional(),
  messages: chatMessages.optional(),
  add_special_tokens: z.boolean().nullish(),
});

export const DetokenizeRequest = z.strictObject({
  model: z.string().nullish(),
  tokens: integerArray,
});

/** Parses a body or throws a 400 naming the first offending field, as OpenAI does. */
export function parseBody<T>(schema: z.ZodType<T>, body: unknown): T {
  if (body === undefined) throw badRequest('the request body is empty: send a JSON object');
  const result = schema.safeParse(body);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  if (issue.code === 'unrecognized_keys') {
    const param = fieldPath([...issue.path, issue.keys[0]]);
    throw badRequest(`Unrecognized request argument supplied: ${param}`, param);
  }
  const param = issue.path.length > 0 ? fieldPath(issue.path) : null;
  throw badRequest(param === null ? `the request body ${issue.message.replace(/^Invalid input: /, '')}` : `${param}: ${issue.message}`, param);
}

/** ['messages', 0, 'role'] -> "messages[0].role" */
export function fieldPath(path: PropertyKey[]): string {
  return path.map((part, i) => (typeof part === 'number' ? `[${part}]` : `${i > 0 ? '.' : ''}${String(part)}`)).join('');
}
