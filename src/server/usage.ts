import type { RequestOutput } from '../engine/outputs.ts';

export interface Usage {
  promptTokens: number;
  completionTokens: number;
}

/** Tokens of finished engine requests: each prompt counts once, however many completions it had. */
export function usageOf(outputs: RequestOutput[]): Usage {
  let promptTokens = 0;
  let completionTokens = 0;
  for (const output of outputs) {
    promptTokens += output.promptTokenIds.length;
    for (const c of output.outputs) completionTokens += c.tokenIds.length;
  }
  return { promptTokens, completionTokens };
}

export function openAiUsage(usage: Usage): { prompt_tokens: number; completion_tokens: number; total_tokens: number } {
  return { prompt_tokens: usage.promptTokens, completion_tokens: usage.completionTokens, total_tokens: usage.promptTokens + usage.completionTokens };
}
