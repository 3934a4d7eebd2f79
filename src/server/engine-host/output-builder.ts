import type { CompletionOutput, RequestMetrics, RequestOutput, StreamDelta } from '../../engine/outputs.ts';

/**
 * A prompt's cumulative output, rebuilt on the server's side from the deltas of its updates: the
 * engine thread sends each token, piece of text and logprob once, never the whole output again.
 */
export class OutputBuilder {
  private readonly requestId: string;
  private readonly promptTokenIds: number[];
  private readonly completions: CompletionOutput[];

  constructor(requestId: string, promptTokenIds: number[], n: number, withLogprobs: boolean) {
    this.requestId = requestId;
    this.promptTokenIds = promptTokenIds;
    this.completions = Array.from({ length: n }, (_, index) => ({ index, text: '', tokenIds: [], logprobs: withLogprobs ? [] : null, finishReason: null, stopReason: null }));
  }

  add(deltas: StreamDelta[]): void {
    for (const d of deltas) {
      const c = this.completions[d.index];
      c.text += d.text;
      for (const id of d.tokenIds) c.tokenIds.push(id);
      if (d.logprobs && c.logprobs) for (const position of d.logprobs) c.logprobs.push(position);
      if (d.finishReason !== null) {
        c.finishReason = d.finishReason;
        c.stopReason = d.stopReason;
      }
    }
  }

  /** The server asks no prompt logprobs (the completions API's echo with logprobs is refused), so none are carried. */
  build(metrics: RequestMetrics): RequestOutput {
    return { requestId: this.requestId, prompt: null, promptTokenIds: this.promptTokenIds, promptLogprobs: null, outputs: this.completions, finished: true, metrics };
  }
}
