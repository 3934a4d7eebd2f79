import { KeelError } from '../errors.ts';
import type { SamplingParams } from '../sampling/sampling-params.ts';
import { checkTokenIds, resolveSamplingParams } from '../sampling/validate.ts';
import { ApiError, badRequest } from './openai-errors.ts';

/** A sampling parameter as the request spells it: its name in the API, the field it sets, its value (null = absent). */
export interface RequestField {
  name: string;
  field: keyof SamplingParams;
  value: unknown;
}

/** The sampling fields both endpoints share, with vLLM's extensions. */
export interface CommonSamplingBody {
  n?: number | null;
  temperature?: number | null;
  top_p?: number | null;
  top_k?: number | null;
  min_p?: number | null;
  presence_penalty?: number | null;
  frequency_penalty?: number | null;
  repetition_penalty?: number | null;
  seed?: number | null;
  logit_bias?: Record<string, number> | null;
  allowed_token_ids?: number[] | null;
  bad_words?: string[] | null;
  stop?: string | string[] | null;
  stop_token_ids?: number[] | null;
  min_tokens?: number | null;
  ignore_eos?: boolean | null;
  include_stop_str_in_output?: boolean | null;
  skip_special_tokens?: boolean | null;
  use_beam_search?: boolean | null;
  beam_width?: number | null;
  length_penalty?: number | null;
  early_stopping?: boolean | 'never' | null;
}

export function commonSamplingFields(body: CommonSamplingBody): RequestField[] {
  return [
    { name: 'n', field: 'n', value: body.n },
    { name: 'temperature', field: 'temperature', value: body.temperature },
    { name: 'top_p', field: 'topP', value: body.top_p },
    { name: 'top_k', field: 'topK', value: body.top_k },
    { name: 'min_p', field: 'minP', value: body.min_p },
    { name: 'presence_penalty', field: 'presencePenalty', value: body.presence_penalty },
    { name: 'frequency_penalty', field: 'frequencyPenalty', value: body.frequency_penalty },
    { name: 'repetition_penalty', field: 'repetitionPenalty', value: body.repetition_penalty },
    { name: 'seed', field: 'seed', value: body.seed },
    { name: 'logit_bias', field: 'logitBias', value: body.logit_bias },
    { name: 'allowed_token_ids', field: 'allowedTokenIds', value: body.allowed_token_ids },
    { name: 'bad_words', field: 'badWords', value: body.bad_words },
    { name: 'stop', field: 'stop', value: body.stop },
    { name: 'stop_token_ids', field: 'stopTokenIds', value: body.stop_token_ids },
    { name: 'min_tokens', field: 'minTokens', value: body.min_tokens },
    { name: 'ignore_eos', field: 'ignoreEos', value: body.ignore_eos },
    { name: 'include_stop_str_in_output', field: 'includeStopStrInOutput', value: body.include_stop_str_in_output },
    { name: 'skip_special_tokens', field: 'skipSpecialTokens', value: body.skip_special_tokens },
    { name: 'use_beam_search', field: 'useBeamSearch', value: body.use_beam_search },
    { name: 'beam_width', field: 'beamWidth', value: body.beam_width },
    { name: 'length_penalty', field: 'lengthPenalty', value: body.length_penalty },
    { name: 'early_stopping', field: 'earlyStopping', value: body.early_stopping },
  ];
}

/**
 * `max_tokens` as given, else the endpoint's default (`fallback`) within the room the context
 * leaves after the prompt, or all that room when the endpoint has none (chat, as vLLM does).
 * A prompt that leaves no room is the prompt's fault (`promptParam` names its field); a
 * max_tokens beyond the room is max_tokens' fault.
 */
export function maxTokensField(
  name: string,
  value: number | null | undefined,
  fallback: number | null,
  promptLength: number,
  maxModelLen: number,
  promptParam: string,
): RequestField {
  const room = maxModelLen - promptLength;
  const overflow = (message: string, param: string) => new ApiError(400, `this model's maximum context length is ${maxModelLen} tokens, ${message}`, { param, code: 'context_length_exceeded' });
  if (room < 1) throw overflow(`but the prompt has ${promptLength} tokens, which leaves no room for the completion`, promptParam);
  if (value === null || value === undefined) return { name, field: 'maxTokens', value: Math.min(fallback ?? room, room) };
  if (value > room) throw overflow(`and the prompt has ${promptLength}, which leaves room for ${room}, but ${name} is ${value}`, name);
  return { name, field: 'maxTokens', value };
}

/**
 * `max_tokens` for validating a request before its prompt is tokenized: as given, else the
 * endpoint's default, else the most any prompt could leave. The prompt's own limit
 * (maxTokensField) is applied once it is known.
 */
export function maxTokensBound(name: string, value: number | null | undefined, fallback: number | null, maxModelLen: number): RequestField {
  return { name, field: 'maxTokens', value: value ?? fallback ?? maxModelLen };
}

/**
 * Validates the request's sampling fields over the model's defaults, its token ids within the
 * model's `vocabSize`. The validator names Keel's fields (`topP`); its errors are re-worded with
 * the request's names (`top_p`), which also become the error's `param`.
 */
export function resolveRequestParams(fields: RequestField[], defaults: Partial<SamplingParams>, vocabSize: number): SamplingParams {
  const present = fields.filter((f) => f.value !== null && f.value !== undefined);
  try {
    const params = resolveSamplingParams(Object.fromEntries(present.map((f) => [f.field, f.value])), defaults);
    checkTokenIds(params, vocabSize);
    return params;
  } catch (error) {
    if (!(error instanceof KeelError)) throw error;
    const culprit = present.find((f) => error.message.startsWith(`${f.field} `));
    let message = error.message;
    for (const f of present) if (f.field !== f.name) message = message.replace(new RegExp(`\\b${f.field}\\b`, 'g'), f.name);
    throw badRequest(message, culprit?.name ?? null);
  }
}
