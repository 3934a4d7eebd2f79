import type { ParseArgsConfig } from 'node:util';
import { integerFlag, numberFlag, oneOf } from '../engine-flags.ts';
import { invalidArgument } from '../../errors.ts';
import type { EngineOptions } from '../../config.ts';
import { readCustomPrompts } from '../../bench/custom-dataset.ts';
import type { Tokenizer } from '../../tokenizer/tokenizer.ts';
import { lengthRange, NANO_VLLM_WORKLOAD, randomRequests, type BenchRequest, type LengthRange, type Workload } from '../../bench/random-dataset.ts';

export function positiveIntFlag(flag: string, raw: string | undefined, fallback: number): number {
  const value = integerFlag(flag, raw) ?? fallback;
  if (value < 1) throw invalidArgument(`${flag} must be a positive integer (got ${value})`);
  return value;
}

export function nonNegativeIntFlag(flag: string, raw: string | undefined, fallback: number): number {
  const value = integerFlag(flag, raw) ?? fallback;
  if (value < 0) throw invalidArgument(`${flag} must not be negative (got ${value})`);
  return value;
}

/** "a, b" -> ['a', 'b']: a comma-separated list, none of its items empty. */
export function commaList(flag: string, value: string): string[] {
  const items = value.split(',').map((s) => s.trim());
  if (items.some((s) => s === '')) throw invalidArgument(`${flag} must be a comma-separated list (got "${value}")`);
  return items;
}

/** A comma-separated list whose every item is one of `choices`. */
export function choiceList<T extends string>(flag: string, value: string, choices: readonly T[]): T[] {
  return commaList(flag, value).map((item) => {
    if (!(choices as readonly string[]).includes(item)) throw invalidArgument(`${flag}: "${item}" is not one of ${choices.join(', ')}`);
    return item as T;
  });
}

/** "1,2,4" -> [1, 2, 4]. */
export function positiveIntList(flag: string, raw: string): number[] {
  return raw.split(',').map((part) => positiveIntFlag(flag, part.trim(), 0));
}

/** Requests per second, or "inf" (the default) to send everything at once. */
export function requestRateFlag(raw: string | undefined): number {
  if (raw === undefined || raw === 'inf') return Infinity;
  const rate = numberFlag('--request-rate', raw) as number;
  if (!(rate > 0)) throw invalidArgument(`--request-rate must be positive or inf (got ${raw})`);
  return rate;
}

export const SYNTHETIC_ACCEPTANCE_HELP = `  --synthetic-accepted-drafts N  with a speculative method: every verification keeps N drafts
                                 (all, when fewer were proposed) whatever the target draws, to
                                 time speculation at a chosen mean accepted length (N + 1). The
                                 outputs are not the model's; the result says "synthetic"`;

/**
 * The engine options with `--synthetic-accepted-drafts`, a benchmark's switch only (generate and
 * serve do not take it): it needs a speculative method.
 */
export function withSyntheticAcceptance(engine: EngineOptions, raw: string | undefined): EngineOptions {
  if (raw === undefined) return engine;
  const drafts = nonNegativeIntFlag('--synthetic-accepted-drafts', raw, 0);
  if (!engine.speculative) throw invalidArgument('--synthetic-accepted-drafts needs a speculative method (--speculative-method or --speculative-model)');
  return { ...engine, speculative: { ...engine.speculative, syntheticAcceptedDrafts: drafts } };
}

/** Flags of the random dataset, shared by `bench throughput` and `bench serve`. */
export const DATASET_FLAGS = {
  dataset: { type: 'string' },
  'num-prompts': { type: 'string' },
  'input-len': { type: 'string' },
  'output-len': { type: 'string' },
  'random-range-ratio': { type: 'string' },
  'dataset-path': { type: 'string' },
} as const satisfies ParseArgsConfig['options'];

export type DatasetFlagValues = { [K in keyof typeof DATASET_FLAGS]?: string };

/** `bench serve --dataset multi-turn`'s own flags. */
export const MULTI_TURN_FLAGS = {
  'num-conversations': { type: 'string' },
  'num-turns': { type: 'string' },
  'turn-len': { type: 'string' },
} as const satisfies ParseArgsConfig['options'];

export type MultiTurnFlagValues = DatasetFlagValues & { [K in keyof typeof MULTI_TURN_FLAGS]?: string };

const MULTI_TURN_DEFAULTS = { numConversations: 32, numTurns: 5, inputLen: 1024, turnLen: 128, outputLen: 128 };

export const MULTI_TURN_FLAGS_HELP = `Multi-turn chat (--dataset multi-turn): conversations of random token ids; each turn re-sends
the whole history (previous prompt, a recorded answer of --output-len tokens, --turn-len new
tokens) once the previous turn completed; --request-rate starts conversations. Reports TTFT of
first and later turns and the server's prefix-cache hit rate by tier (device, host) over the run.
  --num-conversations N          conversations (default ${MULTI_TURN_DEFAULTS.numConversations})
  --num-turns N                  turns per conversation (default ${MULTI_TURN_DEFAULTS.numTurns})
  --input-len N                  first prompt's tokens (default ${MULTI_TURN_DEFAULTS.inputLen})
  --turn-len N                   new user tokens per later turn (default ${MULTI_TURN_DEFAULTS.turnLen})
  --output-len N                 tokens generated per turn, and each recorded answer's (default ${MULTI_TURN_DEFAULTS.outputLen})
  --random-range-ratio R         lengths uniform in [len*(1-R), len*(1+R)] (default 0: fixed)`;

/** The multi-turn workload the flags describe: every field but the vocabulary and the seed. */
export interface MultiTurnWorkload {
  numConversations: number;
  numTurns: number;
  inputLen: LengthRange;
  turnLen: LengthRange;
  outputLen: LengthRange;
}

export function multiTurnFromFlags(values: MultiTurnFlagValues): MultiTurnWorkload {
  if (values['num-prompts'] !== undefined) throw invalidArgument('--dataset multi-turn counts --num-conversations and --num-turns, not --num-prompts');
  const ratio = numberFlag('--random-range-ratio', values['random-range-ratio']) ?? 0;
  const length = (flag: string, raw: string | undefined, fallback: number) => lengthRange(flag, positiveIntFlag(flag, raw, fallback), ratio);
  return {
    numConversations: positiveIntFlag('--num-conversations', values['num-conversations'], MULTI_TURN_DEFAULTS.numConversations),
    numTurns: positiveIntFlag('--num-turns', values['num-turns'], MULTI_TURN_DEFAULTS.numTurns),
    inputLen: length('--input-len', values['input-len'], MULTI_TURN_DEFAULTS.inputLen),
    turnLen: length('--turn-len', values['turn-len'], MULTI_TURN_DEFAULTS.turnLen),
    outputLen: length('--output-len', values['output-len'], MULTI_TURN_DEFAULTS.outputLen),
  };
}

/** vLLM's defaults for its random dataset. */
const DATASET_DEFAULTS = { numPrompts: 1000, inputLen: 1024, outputLen: 128 };

export const DATASET_FLAGS_HELP = `Dataset (random token ids, lengths uniform in their range, reproducible from --seed):
  --dataset random               prompts need no tokenizer (keel bench serve also takes multi-turn)
  --num-prompts N                requests (default ${DATASET_DEFAULTS.numPrompts})
  --input-len N                  prompt tokens (default ${DATASET_DEFAULTS.inputLen})
  --output-len N                 tokens to generate, EOS ignored (default ${DATASET_DEFAULTS.outputLen})
  --random-range-ratio R         lengths uniform in [len*(1-R), len*(1+R)] (default 0: fixed)
Or real text (vLLM's custom dataset; the model's tokenizer turns it into token ids):
  --dataset custom --dataset-path FILE
                                 a JSONL file, one {"prompt": "..."} per line; --num-prompts the
                                 first N (default all), --output-len as above`;

/** The workload the dataset flags describe, or a preset; a preset and dataset flags together are an error. */
export function workloadFromFlags(values: DatasetFlagValues, preset: string | undefined, temperature: number): Workload {
  if (preset !== undefined) {
    oneOf('--workload', preset, ['nano-vllm'] as const);
    const given = Object.keys(DATASET_FLAGS).filter((k) => values[k as keyof DatasetFlagValues] !== undefined);
    if (given.length > 0) throw invalidArgument(`--workload ${preset} fixes the dataset: drop --${given.join(', --')}`);
    return NANO_VLLM_WORKLOAD;
  }
  const dataset = oneOf('--dataset', values.dataset, ['random', 'custom'] as const) ?? 'random';
  const outputLen = positiveIntFlag('--output-len', values['output-len'], DATASET_DEFAULTS.outputLen);
  if (dataset === 'custom') {
    if (values['dataset-path'] === undefined) throw invalidArgument('--dataset custom needs --dataset-path FILE (JSONL, one {"prompt": "..."} per line)');
    const lengthFlags = (['input-len', 'random-range-ratio'] as const).filter((k) => values[k] !== undefined);
    if (lengthFlags.length > 0) throw invalidArgument(`--${lengthFlags.join(', --')} describe random prompts: a custom dataset's prompts are its file's`);
    const texts = readCustomPrompts(values['dataset-path']);
    const numPrompts = positiveIntFlag('--num-prompts', values['num-prompts'], texts.length);
    if (numPrompts > texts.length) throw invalidArgument(`--num-prompts ${numPrompts} is more than the ${texts.length} prompts of ${values['dataset-path']}`);
    return { kind: 'custom', name: 'custom', path: values['dataset-path'], texts: texts.slice(0, numPrompts), numPrompts, outputLen: { min: outputLen, max: outputLen }, temperature };
  }
  if (values['dataset-path'] !== undefined) throw invalidArgument('--dataset-path is the file of --dataset custom');
  const ratio = numberFlag('--random-range-ratio', values['random-range-ratio']) ?? 0;
  const inputLen = positiveIntFlag('--input-len', values['input-len'], DATASET_DEFAULTS.inputLen);
  return {
    kind: 'random',
    name: 'random',
    numPrompts: positiveIntFlag('--num-prompts', values['num-prompts'], DATASET_DEFAULTS.numPrompts),
    inputLen: lengthRange('--input-len', inputLen, ratio),
    outputLen: lengthRange('--output-len', outputLen, ratio),
    temperature,
  };
}

/**
 * The workload's requests: random ones drawn from the seed (`tokenVariant` > 0 draws other token ids
 * for the same lengths, RandomDatasetSpec), or a custom dataset's prompts through the model's
 * tokenizer (with its special tokens, as the server tokenizes a text prompt).
 */
export function workloadRequests(workload: Workload, vocabSize: number, seed: number, tokenizer: Tokenizer | null, tokenVariant = 0): BenchRequest[] {
  if (workload.kind === 'random') {
    return randomRequests({ numPrompts: workload.numPrompts, inputLen: workload.inputLen, outputLen: workload.outputLen, vocabSize, seed, tokenVariant });
  }
  if (tokenizer === null) throw invalidArgument(`--dataset custom needs the model's tokenizer (tokenizer.json) to turn ${workload.path}'s prompts into token ids`);
  return workload.texts.map((text) => ({ promptTokenIds: tokenizer.encode(text, { addSpecialTokens: true }), outputLen: workload.outputLen.min }));
}

/** How a result's config describes the workload. */
export function workloadConfig(workload: Workload): Record<string, unknown> {
  const shape =
    workload.kind === 'custom'
      ? { dataset: 'custom', dataset_path: workload.path, num_prompts: workload.numPrompts }
      : { dataset: 'random', num_prompts: workload.numPrompts, input_len: workload.inputLen };
  return { workload: workload.name, ...shape, output_len: workload.outputLen, temperature: workload.temperature, ignore_eos: true };
}
