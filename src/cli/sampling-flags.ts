import type { ParseArgsConfig } from 'node:util';
import type { SamplingParams } from '../sampling/sampling-params.ts';
import { invalidArgument } from '../errors.ts';
import { integerFlag, numberFlag } from './engine-flags.ts';

export const SAMPLING_FLAGS = {
  'max-tokens': { type: 'string' },
  temperature: { type: 'string' },
  'top-p': { type: 'string' },
  'top-k': { type: 'string' },
  'min-p': { type: 'string' },
  'repetition-penalty': { type: 'string' },
  'presence-penalty': { type: 'string' },
  'frequency-penalty': { type: 'string' },
  'request-seed': { type: 'string' },
  n: { type: 'string' },
  stop: { type: 'string', multiple: true },
  'stop-token-ids': { type: 'string' },
  'ignore-eos': { type: 'boolean' },
  logprobs: { type: 'string' },
} as const satisfies ParseArgsConfig['options'];

export const SAMPLING_FLAGS_HELP = `Sampling options:
  --max-tokens N                 tokens to generate (default 16 for generate, 512 for chat)
  --temperature T                0 = greedy (default 1, or the model's generation_config)
  --top-p P  --top-k K  --min-p P
  --repetition-penalty R  --presence-penalty P  --frequency-penalty F
  --request-seed N               per-request seed: same seed, same output, whatever the batch
  --n N                          completions per prompt (share the prompt's KV blocks)
  --stop TEXT                    stop string (repeatable)
  --stop-token-ids 1,2           stop token ids
  --ignore-eos                   keep generating past EOS
  --logprobs N                   return the top-N logprobs of each generated token`;

type SamplingFlagValues = {
  [K in keyof typeof SAMPLING_FLAGS]?: (typeof SAMPLING_FLAGS)[K] extends { multiple: true }
    ? string[]
    : (typeof SAMPLING_FLAGS)[K]['type'] extends 'boolean'
      ? boolean
      : string;
};

export function samplingParamsFromFlags(values: SamplingFlagValues): Partial<SamplingParams> {
  const params: Partial<SamplingParams> = {
    maxTokens: integerFlag('--max-tokens', values['max-tokens']),
    temperature: numberFlag('--temperature', values.temperature),
    topP: numberFlag('--top-p', values['top-p']),
    topK: integerFlag('--top-k', values['top-k']),
    minP: numberFlag('--min-p', values['min-p']),
    repetitionPenalty: numberFlag('--repetition-penalty', values['repetition-penalty']),
    presencePenalty: numberFlag('--presence-penalty', values['presence-penalty']),
    frequencyPenalty: numberFlag('--frequency-penalty', values['frequency-penalty']),
    seed: integerFlag('--request-seed', values['request-seed']),
    n: integerFlag('--n', values.n),
    stop: values.stop,
    stopTokenIds: values['stop-token-ids'] === undefined ? undefined : idList('--stop-token-ids', values['stop-token-ids']),
    ignoreEos: values['ignore-eos'],
    logprobs: integerFlag('--logprobs', values.logprobs),
  };
  return Object.fromEntries(Object.entries(params).filter(([, v]) => v !== undefined)) as Partial<SamplingParams>;
}

/** "1,2,3" -> [1, 2, 3]; a bad entry names the flag and the entry. */
export function idList(name: string, raw: string): number[] {
  return raw.split(',').map((part) => {
    const id = integerFlag(name, part.trim());
    if (id === undefined || id < 0) throw invalidArgument(`${name}: "${part}" is not a token id`);
    return id;
  });
}
