import { readJsonBody } from '../json-body.ts';
import { badRequest, toApiError } from '../openai-errors.ts';
import { commonSamplingFields, maxTokensBound, maxTokensField, resolveRequestParams, type RequestField } from '../openai-sampling.ts';
import { CompletionRequest, parseBody, type CompletionPrompt } from '../openai-schemas.ts';
import { structuredOutputField } from '../structured-output-request.ts';
import { servedModel, requireTokenizer, type PreprocessContext } from './preprocess-context.ts';
import type { PreparedCompletion } from './preprocess-protocol.ts';
import { checkN, checkPromptBytes, checkPromptCount, checkPromptTokens, checkSequences } from './request-limits.ts';

/** OpenAI's legacy completions generate 16 tokens when a request names no max_tokens. */
export const COMPLETIONS_DEFAULT_MAX_TOKENS = 16;

/**
 * A /v1/completions body, ready for the engine: one prompt per entry of the batch, each with its
 * token ids and sampling parameters. Whatever can be refused without tokenizing (bad fields, the
 * limits on n, prompts, sequences and prompt bytes) is refused before tokenizing.
 */
export async function prepareCompletion(ctx: PreprocessContext, raw: Uint8Array): Promise<PreparedCompletion> {
  const json = readJsonBody(raw);
  // Counted before the schema reads every prompt of a batch that is refused anyway.
  const batch = (json as { prompt?: unknown } | null)?.prompt;
  if (Array.isArray(batch) && batch.length > 0 && typeof batch[0] !== 'number') checkPromptCount(batch.length, ctx.settings.limits);
  const body = parseBody(CompletionRequest, json);
  const lora = servedModel(ctx, body.model);
  if (body.echo && body.logprobs !== null && body.logprobs !== undefined) {
    throw badRequest('echo with logprobs needs the prompt tokens\' logprobs, which Keel does not compute', 'echo');
  }
  if (body.best_of !== null && body.best_of !== undefined && body.best_of !== (body.n ?? 1)) {
    throw badRequest('best_of other than n is not supported', 'best_of');
  }
  const { limits, maxModelLen, samplingDefaults, vocabSize } = ctx.settings;
  const structured = await structuredOutputField(body);
  const fields: RequestField[] = [...commonSamplingFields(body), { name: 'logprobs', field: 'logprobs', value: body.logprobs }, ...(structured ? [structured] : [])];
  const checked = resolveRequestParams([...fields, maxTokensBound('max_tokens', body.max_tokens, COMPLETIONS_DEFAULT_MAX_TOKENS, maxModelLen)], samplingDefaults, vocabSize);
  if (ctx.chat === null && checked.stop.length > 0) {
    throw badRequest('stop strings need the model\'s tokenizer, and this model has none: use stop_token_ids', 'stop');
  }
  if (ctx.chat === null && checked.badWords.length > 0) throw badRequest('bad_words need the model\'s tokenizer, and this model has none', 'bad_words');
  const texts = promptTexts(body.prompt);
  checkN(checked.n, limits);
  checkPromptCount(texts.length, limits);
  checkSequences(texts.length, checked.n, limits);
  texts.forEach((text, i) => {
    if (typeof text === 'string') checkPromptBytes(Buffer.byteLength(text), limits, texts.length === 1 && typeof body.prompt === 'string' ? 'prompt' : `prompt[${i}]`);
  });

  const encoded = texts.map((text) => (typeof text === 'string' ? { tokenIds: encodeText(ctx, text), text } : { tokenIds: text, text: null }));
  const prompts = encoded.map(({ tokenIds, text }) => {
    const params = resolveRequestParams([...fields, maxTokensField('max_tokens', body.max_tokens, COMPLETIONS_DEFAULT_MAX_TOKENS, tokenIds.length, maxModelLen, 'prompt')], samplingDefaults, vocabSize);
    return { tokenIds, params, text };
  });
  checkPromptTokens(
    prompts.reduce((sum, p) => sum + p.tokenIds.length, 0),
    limits,
    'prompt',
  );
  return {
    prompts: prompts.map(({ tokenIds, params, text }) => ({ tokenIds, params, lora, echoText: body.echo ? (text ?? decodePrompt(ctx, tokenIds, params.skipSpecialTokens)) : '' })),
    n: checked.n,
    stream: body.stream === true,
    includeUsage: body.stream_options?.include_usage === true,
  };
}

/** Each prompt of the batch: its text, or its token ids. */
function promptTexts(prompt: CompletionPrompt): (string | number[])[] {
  if (typeof prompt === 'string') return [prompt];
  if (prompt.every((p) => typeof p === 'number')) return [prompt as number[]];
  return prompt as string[] | number[][];
}

/** A text prompt as the engine sees it: with the tokenizer's special tokens (BOS...), and its special-token strings as control tokens. */
function encodeText(ctx: PreprocessContext, text: string): number[] {
  const tokenizer = requireTokenizer(ctx, 'prompt', 'tokenize text');
  try {
    return tokenizer.encode(text, { addSpecialTokens: true });
  } catch (error) {
    throw toApiError(error, 'prompt');
  }
}

function decodePrompt(ctx: PreprocessContext, tokenIds: number[], skipSpecialTokens: boolean): string {
  return requireTokenizer(ctx, 'echo', 'echo a token-id prompt').decode(tokenIds, { skipSpecialTokens });
}
