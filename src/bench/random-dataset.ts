import { invalidArgument } from '../errors.ts';
import { forkStream, type Rng } from '../sampling/rng.ts';

/** One benchmark request: a prompt of token ids and how many tokens to generate (EOS ignored). */
export interface BenchRequest {
  promptTokenIds: number[];
  outputLen: number;
}

/** Inclusive bounds of a length drawn uniformly. */
export interface LengthRange {
  min: number;
  max: number;
}

/**
 * vLLM's "random" dataset: prompts of random token ids (no shared prefixes, so prefix caching
 * finds nothing), input and output lengths uniform in their ranges, reproducible from the seed.
 */
export interface RandomDatasetSpec {
  numPrompts: number;
  inputLen: LengthRange;
  outputLen: LengthRange;
  vocabSize: number;
  seed: number;
  /**
   * Another draw of the token ids for the same lengths (0, the default, is the seed's own): a
   * benchmark's repeats run fresh prompts of one shape, so no repeat finds the last in the prefix cache.
   */
  tokenVariant?: number;
}

/** A named workload: a dataset and the temperature its requests sample at. */
export type Workload = RandomWorkload | CustomWorkload;

/** Random token ids of lengths drawn from their ranges. */
export interface RandomWorkload {
  kind: 'random';
  name: string;
  numPrompts: number;
  inputLen: LengthRange;
  outputLen: LengthRange;
  temperature: number;
}

/** The prompts of a custom dataset file (custom-dataset.ts), each generating outputLen tokens. */
export interface CustomWorkload {
  kind: 'custom';
  name: 'custom';
  path: string;
  texts: string[];
  numPrompts: number;
  outputLen: LengthRange;
  temperature: number;
}

/** nano-vllm's bench.py: 256 sequences, input and output 100..1024 tokens each, temperature 0.6. */
export const NANO_VLLM_WORKLOAD: RandomWorkload = {
  kind: 'random',
  name: 'nano-vllm',
  numPrompts: 256,
  inputLen: { min: 100, max: 1024 },
  outputLen: { min: 100, max: 1024 },
  temperature: 0.6,
};

/**
 * `--input-len 1024 --random-range-ratio 0.5` -> 512..1536, as vLLM derives it (floor of the low
 * end, ceiling of the high end); never below 1 token.
 */
export function lengthRange(flag: string, length: number, rangeRatio: number): LengthRange {
  if (!Number.isInteger(length) || length < 1) throw invalidArgument(`${flag} must be a positive integer (got ${length})`);
  if (!(rangeRatio >= 0 && rangeRatio < 1)) throw invalidArgument(`--random-range-ratio must be in [0, 1) (got ${rangeRatio})`);
  return { min: Math.max(1, Math.floor(length * (1 - rangeRatio))), max: Math.ceil(length * (1 + rangeRatio)) };
}

export function randomRequests(spec: RandomDatasetSpec): BenchRequest[] {
  if (!Number.isInteger(spec.numPrompts) || spec.numPrompts < 1) throw invalidArgument(`--num-prompts must be a positive integer (got ${spec.numPrompts})`);
  for (const [name, range] of [['input', spec.inputLen], ['output', spec.outputLen]] as const) {
    if (!(Number.isInteger(range.min) && Number.isInteger(range.max) && range.min >= 1 && range.min <= range.max)) {
      throw invalidArgument(`${name} length range ${range.min}..${range.max} is empty or not positive`);
    }
  }
  // Lengths and token ids draw from separate streams, so a longer prompt does not shift the lengths after it.
  const lengths = forkStream(spec.seed, 0);
  const tokens = forkStream(spec.seed, 1 + (spec.tokenVariant ?? 0));
  return Array.from({ length: spec.numPrompts }, () => {
    const inputLen = uniformInt(lengths, spec.inputLen);
    const outputLen = uniformInt(lengths, spec.outputLen);
    return { promptTokenIds: randomTokens(tokens, inputLen, spec.vocabSize), outputLen };
  });
}

/** `count` token ids uniform over the vocabulary. */
export function randomTokens(rng: Rng, count: number, vocabSize: number): number[] {
  return Array.from({ length: count }, () => uniformInt(rng, { min: 0, max: vocabSize - 1 }));
}

/** Uniform integer in [min, max]: the 53-bit float scaled, whose bias is far below what a benchmark sees. */
export function uniformInt(rng: Rng, range: LengthRange): number {
  return range.min + Math.floor(rng.nextFloat() * (range.max - range.min + 1));
}
