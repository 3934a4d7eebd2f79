import type { LLM } from '../../src/engine/llm.ts';
import type { RequestOutput } from '../../src/engine/outputs.ts';
import { forkStream, type Rng } from '../../src/sampling/rng.ts';

// Multi-turn conversations over keel-tiny's vocabulary whose history outgrows a small pool: what
// the prefix cache's host tier (docs/long-context.md) is for, on one device and in parallel runs.

/** `count` random token ids of keel-tiny's vocabulary. */
export const randomTokens = (rng: Rng, count: number) => Array.from({ length: count }, () => 5 + Math.floor(rng.nextFloat() * 8000));

/**
 * Conversations of `turns` turns, run turn by turn (every conversation's turn k in one batch):
 * each turn's prompt is the previous one, a 16-token recorded answer and 12 new user tokens.
 * Returns every turn's output, conversation by conversation.
 */
export async function converse(llm: LLM, seed: number, numConversations: number, turns: number): Promise<RequestOutput[][]> {
  const rng = forkStream(seed, 0);
  let prompts = Array.from({ length: numConversations }, () => randomTokens(rng, 40));
  const outputs: RequestOutput[][] = prompts.map(() => []);
  for (let turn = 0; turn < turns; turn++) {
    const results = await llm.generate(prompts, { temperature: 0, ignoreEos: true, maxTokens: 16 });
    results.forEach((result, c) => outputs[c].push(result));
    prompts = prompts.map((prompt) => [...prompt, ...randomTokens(rng, 16), ...randomTokens(rng, 12)]);
  }
  return outputs;
}

/** The generated tokens of every turn, conversation by conversation. */
export function generated(outputs: RequestOutput[][]): number[][][] {
  return outputs.map((turns) => turns.map((o) => o.outputs[0].tokenIds));
}
