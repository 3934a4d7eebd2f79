import type { BenchRequest } from './random-dataset.ts';
import { sseData } from './sse-events.ts';

/** What one streamed request measured. Times are in ms from the moment the request was sent. */
export interface CompletionTiming {
  ok: boolean;
  error: string | null;
  promptTokens: number;
  /** From the final usage chunk when the server sends one, else counted from the chunks. */
  outputTokens: number;
  /** Time to the first chunk with a choice. */
  ttftMs: number | null;
  /** Gaps between consecutive chunks with a choice. */
  itlMs: number[];
  e2eMs: number;
  /** Chunks that carried a choice: one per token when the server streams token by token. */
  choiceChunks: number;
}

export interface CompletionTarget {
  baseUrl: string;
  model: string;
  apiKey: string | null;
}

/**
 * One `/v1/completions` request with a token-id prompt, streamed, greedy, EOS ignored, usage
 * requested: `vllm bench serve`'s request. `perTokenLogprobs` adds `logprobs: 0`, which makes a
 * server without a tokenizer (whose text is empty) still send one chunk per token.
 */
export async function timedCompletion(target: CompletionTarget, request: BenchRequest, perTokenLogprobs: boolean): Promise<CompletionTiming> {
  const body = {
    model: target.model,
    prompt: request.promptTokenIds,
    max_tokens: request.outputLen,
    temperature: 0,
    ignore_eos: true,
    stream: true,
    stream_options: { include_usage: true },
    ...(perTokenLogprobs ? { logprobs: 0 } : {}),
  };
  const timing: CompletionTiming = {
    ok: false,
    error: null,
    promptTokens: request.promptTokenIds.length,
    outputTokens: 0,
    ttftMs: null,
    itlMs: [],
    e2eMs: 0,
    choiceChunks: 0,
  };
  const start = performance.now();
  let last = start;
  let countedTokens = 0;
  let usageTokens: number | null = null;
  let done = false;
  try {
    const response = await fetch(`${target.baseUrl}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(target.apiKey ? { authorization: `Bearer ${target.apiKey}` } : {}) },
      body: JSON.stringify(body),
    });
    if (!response.ok || !response.body) {
      timing.error = `HTTP ${response.status}: ${await errorMessage(response)}`;
      timing.e2eMs = performance.now() - start;
      return timing;
    }
    for await (const data of sseData(response.body)) {
      const now = performance.now();
      if (data === '[DONE]') {
        done = true;
        break;
      }
      const chunk = JSON.parse(data) as StreamChunk;
      if (chunk.error) throw new Error(chunk.error.message ?? JSON.stringify(chunk.error));
      if (chunk.choices && chunk.choices.length > 0) {
        if (timing.ttftMs === null) timing.ttftMs = now - start;
        else timing.itlMs.push(now - last);
        last = now;
        timing.choiceChunks++;
        countedTokens += chunk.choices[0].logprobs?.tokens?.length ?? 1;
      }
      if (chunk.usage) usageTokens = chunk.usage.completion_tokens;
    }
    if (!done) throw new Error('the stream ended without [DONE]');
    timing.ok = true;
  } catch (error) {
    timing.error = (error as Error).message;
  }
  timing.outputTokens = usageTokens ?? countedTokens;
  timing.e2eMs = performance.now() - start;
  return timing;
}

interface StreamChunk {
  choices?: { text?: string; logprobs?: { tokens?: string[] } | null }[];
  usage?: { completion_tokens: number } | null;
  error?: { message?: string };
}

async function errorMessage(response: Response): Promise<string> {
  const text = await response.text().catch(() => '');
  try {
    return (JSON.parse(text) as { error?: { message?: string } }).error?.message ?? text;
  } catch {
    return text || response.statusText;
  }
}
