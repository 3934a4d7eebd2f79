import { invalidArgument } from '../errors.ts';
import { forkStream } from '../sampling/rng.ts';
import { randomTokens, uniformInt, type BenchRequest, type LengthRange } from './random-dataset.ts';

/**
 * A multi-turn chat workload of random token ids: `numConversations` conversations of `numTurns`
 * turns. A conversation's first prompt has `inputLen` tokens; each later prompt re-sends the whole
 * history (the previous prompt and its answer) followed by `turnLen` new user tokens, as a chat
 * client does. The answers are recorded ones, `outputLen` random tokens each (a server's own
 * tokens would make the prompts depend on its outputs), so the prefix a turn shares with the
 * server's cache is its previous prompt.
 */
export interface MultiTurnSpec {
  numConversations: number;
  numTurns: number;
  inputLen: LengthRange;
  turnLen: LengthRange;
  outputLen: LengthRange;
  vocabSize: number;
  seed: number;
}

/** Each conversation's turns, in order: turn k's prompt begins with turn k - 1's prompt. */
export function multiTurnConversations(spec: MultiTurnSpec): BenchRequest[][] {
  for (const [flag, v] of [['--num-conversations', spec.numConversations], ['--num-turns', spec.numTurns]] as const) {
    if (!Number.isInteger(v) || v < 1) throw invalidArgument(`${flag} must be a positive integer (got ${v})`);
  }
  // Lengths and token ids draw from separate streams, as the random dataset's do.
  const lengths = forkStream(spec.seed, 0);
  const tokens = forkStream(spec.seed, 1);
  return Array.from({ length: spec.numConversations }, () => {
    const turns: BenchRequest[] = [];
    let prompt = randomTokens(tokens, uniformInt(lengths, spec.inputLen), spec.vocabSize);
    for (let turn = 0; turn < spec.numTurns; turn++) {
      const outputLen = uniformInt(lengths, spec.outputLen);
      turns.push({ promptTokenIds: prompt, outputLen });
      const answer = randomTokens(tokens, outputLen, spec.vocabSize);
      prompt = [...prompt, ...answer, ...randomTokens(tokens, uniformInt(lengths, spec.turnLen), spec.vocabSize)];
    }
    return turns;
  });
}
