import type { PositionLogprobs, TokenLogprob } from '../engine/outputs.ts';

export interface ChatTokenLogprob {
  token: string;
  logprob: number;
  bytes: number[];
}

export interface ChatLogprobs {
  content: (ChatTokenLogprob & { top_logprobs: ChatTokenLogprob[] })[];
  refusal: null;
}

/** Chat completions' `logprobs`: per token, its logprob, its UTF-8 bytes and the top alternatives. */
export function chatLogprobs(positions: PositionLogprobs[]): ChatLogprobs {
  return { content: positions.map((p) => ({ ...chatToken(p.sampled), top_logprobs: p.top.map(chatToken) })), refusal: null };
}

function chatToken(t: TokenLogprob): ChatTokenLogprob {
  return { token: t.token, logprob: t.logprob, bytes: [...Buffer.from(t.token, 'utf8')] };
}

export interface CompletionLogprobs {
  tokens: string[];
  token_logprobs: number[];
  /** The top alternatives and the sampled token, by token text. */
  top_logprobs: Record<string, number>[];
  /** Where each token starts in the choice's text (echoed prompt included). */
  text_offset: number[];
}

/**
 * Legacy completions' `logprobs` for tokens that start at `startOffset` in the choice's text.
 * Returns the offset after the last token, where the next streamed chunk's tokens start.
 */
export function completionLogprobs(positions: PositionLogprobs[], startOffset: number): { logprobs: CompletionLogprobs; endOffset: number } {
  let offset = startOffset;
  const textOffset = positions.map((p) => {
    const start = offset;
    offset += p.sampled.token.length;
    return start;
  });
  return {
    logprobs: {
      tokens: positions.map((p) => p.sampled.token),
      token_logprobs: positions.map((p) => p.sampled.logprob),
      top_logprobs: positions.map(topByText),
      text_offset: textOffset,
    },
    endOffset: offset,
  };
}

/**
 * A position's alternatives and its sampled token by token text (a later one wins, as
 * Object.fromEntries would have it). The prototype-less object takes any text as its own key,
 * `__proto__` included, and stays in dictionary mode: a stream's thousands of such objects, each
 * with other keys, would otherwise make as many hidden classes.
 */
function topByText(p: PositionLogprobs): Record<string, number> {
  const top: Record<string, number> = Object.create(null);
  for (const t of p.top) top[t.token] = t.logprob;
  top[p.sampled.token] = p.sampled.logprob;
  return top;
}
