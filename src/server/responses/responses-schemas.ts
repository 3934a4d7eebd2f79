import { z } from 'zod';
import { functionDefinition } from '../openai-schemas.ts';

/**
 * The body of POST /v1/responses, as the OpenAI API documents it. Fields that change nothing here
 * (`include`, `reasoning`, `truncation: "disabled"`...) are accepted; what Keel cannot do (tools
 * other than functions, images and files in the input, background responses) is refused, naming it.
 */

const inputText = z.strictObject({ type: z.literal('input_text'), text: z.string() });
const outputText = z.looseObject({ type: z.literal('output_text'), text: z.string() });
const refusal = z.looseObject({ type: z.literal('refusal'), refusal: z.string() });
const contentPart = z.discriminatedUnion('type', [inputText, outputText, refusal], {
  error: 'must be an input_text, output_text or refusal part (Keel reads text only: no images, files or audio)',
});

const status = z.enum(['in_progress', 'completed', 'incomplete']).nullish();

const messageItem = z.strictObject({
  type: z.literal('message'),
  role: z.enum(['user', 'assistant', 'system', 'developer'], { error: 'must be "user", "assistant", "system" or "developer"' }),
  content: z.union([z.string(), z.array(contentPart)], { error: 'must be a string or an array of input_text, output_text or refusal parts (Keel reads text only: no images, files or audio)' }),
  id: z.string().nullish(),
  status,
});

const functionCallItem = z.strictObject({
  type: z.literal('function_call'),
  call_id: z.string(),
  name: z.string(),
  arguments: z.string(),
  id: z.string().nullish(),
  status,
});

const functionCallOutputItem = z.strictObject({
  type: z.literal('function_call_output'),
  call_id: z.string(),
  output: z.union([z.string(), z.array(inputText)], { error: 'must be a string or an array of input_text parts' }),
  id: z.string().nullish(),
  status,
});

/** A reasoning item sent back: accepted, and left out of the prompt (chat templates drop past reasoning). */
const reasoningItem = z.looseObject({ type: z.literal('reasoning') });

/** A message may leave out `type` (OpenAI's "easy input message"). */
const inputItem = z.preprocess(
  (item) => (typeof item === 'object' && item !== null && !('type' in item) && 'role' in item ? { ...item, type: 'message' } : item),
  z.discriminatedUnion('type', [messageItem, functionCallItem, functionCallOutputItem, reasoningItem], {
    error: 'must be a message, function_call, function_call_output or reasoning item',
  }),
);
export type ResponsesInputItem = z.infer<typeof inputItem>;

const functionTool = z.strictObject({ type: z.literal('function'), ...functionDefinition.shape });
const tool = z.looseObject({ type: z.string() }).superRefine((t, ctx) => {
  if (t.type !== 'function') ctx.addIssue({ code: 'custom', message: `only function tools are supported (got "${t.type}")` });
});
export type ResponsesTool = z.infer<typeof functionTool>;

const toolChoice = z.union([z.enum(['none', 'auto', 'required']), z.strictObject({ type: z.literal('function'), name: z.string() })], {
  error: 'must be "none", "auto", "required" or {"type": "function", "name": ...}',
});

const textFormat = z.discriminatedUnion(
  'type',
  [
    z.strictObject({ type: z.literal('text') }),
    z.strictObject({ type: z.literal('json_object') }),
    z.strictObject({ type: z.literal('json_schema'), name: z.string(), schema: z.record(z.string(), z.unknown()), description: z.string().nullish(), strict: z.boolean().nullish() }),
  ],
  { error: 'must be {"type": "text"}, {"type": "json_object"} or {"type": "json_schema", "name": ..., "schema": {...}}' },
);
export type ResponsesTextFormat = z.infer<typeof textFormat>;

const number = z.number().nullish();

export const ResponsesRequest = z.strictObject({
  model: z.string().nullish(),
  /** A string is one user message. */
  input: z.preprocess((input) => (typeof input === 'string' ? [{ role: 'user', content: input }] : input), z.array(inputItem, { error: 'must be a string or an array of input items' })),
  instructions: z.string().nullish(),
  previous_response_id: z.string().nullish(),
  tools: z.array(tool.pipe(functionTool)).nullish(),
  tool_choice: toolChoice.nullish(),
  parallel_tool_calls: z.boolean().nullish(),
  text: z.strictObject({ format: textFormat.nullish(), verbosity: z.string().nullish() }).nullish(),
  max_output_tokens: number,
  temperature: number,
  top_p: number,
  stream: z.boolean().nullish(),
  stream_options: z.strictObject({ include_obfuscation: z.boolean().nullish() }).nullish(),
  store: z.boolean().nullish(),
  metadata: z.record(z.string(), z.string()).nullish(),
  user: z.string().nullish(),
  truncation: z.literal('disabled', { error: 'only "disabled" is supported: a conversation that does not fit is an error' }).nullish(),
  reasoning: z.looseObject({}).nullish(),
  include: z.array(z.string()).nullish(),
  background: z.literal(false, { error: 'background responses are not supported' }).nullish(),
  top_logprobs: z.literal(0, { error: 'logprobs are not supported on /v1/responses (use /v1/chat/completions)' }).nullish(),
  service_tier: z.string().nullish(),
  prompt_cache_key: z.string().nullish(),
  safety_identifier: z.string().nullish(),
});
export type ResponsesRequest = z.infer<typeof ResponsesRequest>;
