import type { LLM } from '../../src/engine/llm.ts';
import type { RequestOutput } from '../../src/engine/outputs.ts';
import type { SamplingParams } from '../../src/sampling/sampling-params.ts';

/**
 * Runs every prompt at once, each streamed; request k of those picked is aborted once it has
 * `abortAfter[k]` tokens (null: never). Returns each request's last output.
 */
export async function crowd(llm: LLM, list: number[][], params: Partial<SamplingParams>, abortAfter: (number | null)[]): Promise<RequestOutput[]> {
  return Promise.all(
    list.map(async (prompt, k) => {
      let last: RequestOutput | null = null;
      for await (const update of llm.stream(prompt, params)) {
        last = update.output;
        const limit = abortAfter[k];
        if (limit !== null && update.output.outputs[0].tokenIds.length >= limit) break;
      }
      return last!;
    }),
  );
}
