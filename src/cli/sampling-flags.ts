import type { ParseArgsConfig } from 'node:util';
import type { SamplingParams } from '../sampling/sampling-params.ts';
import { invalidArgument } from '../errors.ts';
import { resolveSamplingParams } from '../sampling/validate.ts';
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
  'logit-bias': { type: 'string' },
  'allowed-token-ids': { type: 'string' },
  'bad-words': { type: 'string', multiple: true },
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
  --logprobs N                   return the top-N logprobs of each generated token
  --logit-bias JSON              biases in [-100, 100] by token id: '{"50256": -100}' bans token 50256
  --allowed-token-ids 1,2        the only tokens that may be drawn
  --bad-words WORD               a word never generated (repeatable)`;

type SamplingFlagValues = {
  [K in keyof typeof SAMPLING_FLAGS]?: (typeof SAMPLING_FLAGS)[K] extends { multiple: true }
    ? string[]
    : (typeof SAMPLING_FLAGS)[K]['type'] extends 'boolean'
      ? boolean
      : string;
};

/** The SamplingParams field each flag sets. */
export const SAMPLING_FIELD_OF_FLAG = {
  'max-tokens': 'maxTokens',
  temperature: 'temperature',
  'top-p': 'topP',
  'top-k': 'topK',
  'min-p': 'minP',
  'repetition-penalty': 'repetitionPenalty',
  'presence-penalty': 'presencePenalty',
  'frequency-penalty': 'frequencyPenalty',
  'request-seed': 'seed',
  n: 'n',
  stop: 'stop',
  'stop-token-ids': 'stopTokenIds',
  'ignore-eos': 'ignoreEos',
  logprobs: 'logprobs',
  'logit-bias': 'logitBias',
  'allowed-token-ids': 'allowedTokenIds',
  'bad-words': 'badWords',
} as const satisfies Record<keyof typeof SAMPLING_FLAGS, keyof SamplingParams>;

const INTEGER_FLAGS = new Set(['max-tokens', 'top-k', 'request-seed', 'n', 'logprobs']);

/**
 * The sampling parameters the flags give, validated as the engine will (the ranges of
 * resolveSamplingParams) before any model loads; main.ts words the errors with the flags' names.
 */
export function samplingParamsFromFlags(values: SamplingFlagValues): Partial<SamplingParams> {
  const params: Record<string, unknown> = {};
  for (const [flag, field] of Object.entries(SAMPLING_FIELD_OF_FLAG) as [keyof typeof SAMPLING_FIELD_OF_FLAG, keyof SamplingParams][]) {
    const raw = values[flag];
    if (raw === undefined) continue;
    const name = `--${flag}`;
    let value: unknown;
    if (typeof raw !== 'string') value = raw;
    else if (flag === 'stop-token-ids' || flag === 'allowed-token-ids') value = idList(name, raw);
    else if (flag === 'logit-bias') value = jsonFlag(name, raw);
    else value = INTEGER_FLAGS.has(flag) ? integerFlag(name, raw) : numberFlag(name, raw);
    resolveSamplingParams({ [field]: value });
    params[field] = value;
  }
  return params as Partial<SamplingParams>;
}

/** A flag's JSON value; text that is not JSON names the flag. */
function jsonFlag(name: string, raw: string): unknown {
  try {
    return JSON.parse(raw);
  } catch {
    throw invalidArgument(`${name} expects JSON, such as '{"50256": -100}' (got ${raw})`);
  }
}

/** "1,2,3" -> [1, 2, 3]; a bad entry names the flag and the entry. */
export function idList(name: string, raw: string): number[] {
  return raw.split(',').map((part) => {
    const id = integerFlag(name, part.trim());
    if (id === undefined || id < 0) throw invalidArgument(`${name}: "${part}" is not a token id`);
    return id;
  });
}
