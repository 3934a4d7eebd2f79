import { invalidArgument } from '../errors.ts';
import { DEFAULT_SAMPLING_PARAMS, type SamplingParams } from './sampling-params.ts';
import { parseStructuredOutput } from './structured-output.ts';

const MAX_N = 128;
const MAX_TEMPERATURE = 100;
const MAX_REPETITION_PENALTY = 100;
const MAX_STOP_STRINGS = 16;
const MAX_BAD_WORDS = 256;
const MAX_LOGPROBS = 20;
const MAX_LENGTH_PENALTY = 100;
/** OpenAI's bounds on a logit bias. */
const MAX_LOGIT_BIAS = 100;

/** What a field accepts, in words for the error message, and how to read it (undefined = rejected). */
interface Rule<T> {
  expected: string;
  parse(value: unknown): T | undefined;
}

const RULES: { [K in keyof SamplingParams]: Rule<SamplingParams[K]> } = {
  n: integerIn(1, MAX_N),
  temperature: numberIn(0, MAX_TEMPERATURE),
  topP: numberIn(0, 1, { excludeMin: true }),
  topK: integerIn(-1, Number.MAX_SAFE_INTEGER),
  minP: numberIn(0, 1),
  repetitionPenalty: numberIn(0, MAX_REPETITION_PENALTY, { excludeMin: true }),
  presencePenalty: numberIn(-2, 2),
  frequencyPenalty: numberIn(-2, 2),
  logitBias: nullable({
    expected: `an object mapping token ids to biases in [-${MAX_LOGIT_BIAS}, ${MAX_LOGIT_BIAS}]`,
    parse: (value) => (typeof value === 'object' && value !== null && !Array.isArray(value) ? parseLogitBias(value) : undefined),
  }),
  allowedTokenIds: nullable({
    expected: 'a non-empty array of non-negative integers',
    parse: (value) => (Array.isArray(value) && value.length > 0 && value.every((id) => Number.isSafeInteger(id) && id >= 0) ? [...value] : undefined),
  }),
  badWords: {
    expected: `an array of at most ${MAX_BAD_WORDS} strings, none blank`,
    parse: (value) => (Array.isArray(value) && value.length <= MAX_BAD_WORDS && value.every((w) => typeof w === 'string' && w.trim().length > 0) ? [...value] : undefined),
  },
  seed: nullable(integerIn(Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER)),
  stop: {
    expected: `a non-empty string or an array of at most ${MAX_STOP_STRINGS} non-empty strings`,
    parse: (value) => {
      if (typeof value === 'string') return value.length > 0 ? [value] : undefined;
      const valid = Array.isArray(value) && value.length <= MAX_STOP_STRINGS && value.every((s) => typeof s === 'string' && s.length > 0);
      return valid ? [...value] : undefined;
    },
  },
  stopTokenIds: {
    expected: 'an array of non-negative integers',
    parse: (value) => (Array.isArray(value) && value.every((id) => Number.isSafeInteger(id) && id >= 0) ? [...value] : undefined),
  },
  includeStopStrInOutput: boolean(),
  maxTokens: integerIn(1, Number.MAX_SAFE_INTEGER),
  minTokens: integerIn(0, Number.MAX_SAFE_INTEGER),
  ignoreEos: boolean(),
  logprobs: nullable(integerIn(0, MAX_LOGPROBS)),
  promptLogprobs: nullable(integerIn(0, MAX_LOGPROBS)),
  skipSpecialTokens: boolean(),
  structuredOutput: {
    expected: 'null or {type: "json_schema", schema} | {type: "json_object"} | {type: "regex", pattern} | {type: "choice", choices} | {type: "grammar", grammar}',
    parse: (value) => {
      if (value === null) return null;
      const parsed = parseStructuredOutput(value);
      if (typeof parsed === 'string') throw invalidArgument(`structuredOutput is invalid: ${parsed}`);
      return parsed;
    },
  },
  useBeamSearch: boolean(),
  beamWidth: nullable(integerIn(1, MAX_N)),
  lengthPenalty: numberIn(-MAX_LENGTH_PENALTY, MAX_LENGTH_PENALTY),
  earlyStopping: {
    expected: 'true, false or "never"',
    parse: (value) => (typeof value === 'boolean' || value === 'never' ? value : undefined),
  },
};

/** Where a layer of parameters came from, for error messages. */
interface Layer {
  /** Prefixed to field names: the request's own fields go bare. */
  fieldPrefix: string;
  noun: string;
}

const REQUEST: Layer = { fieldPrefix: '', noun: 'sampling parameter' };
const DEFAULTS: Layer = { fieldPrefix: 'sampling default ', noun: 'sampling default' };

/**
 * Merges `input` (absent as undefined or null) over `defaults` (e.g. the model's
 * generation_config.json) over DEFAULT_SAMPLING_PARAMS and validates every field; a key whose value
 * is `undefined` counts as absent. Throws KeelError('invalid_argument') naming the field and what it
 * accepts. Checks that need the model (context length, token ids within the vocabulary) are the
 * engine's.
 */
export function resolveSamplingParams(input: unknown, defaults: Partial<SamplingParams> = {}): SamplingParams {
  const resolved: SamplingParams = {
    ...DEFAULT_SAMPLING_PARAMS,
    ...parseLayer(defaults, DEFAULTS),
    ...parseLayer(input ?? {}, REQUEST),
  };
  if (resolved.minTokens > resolved.maxTokens) {
    throw invalidArgument(`minTokens must be an integer in [0, maxTokens=${resolved.maxTokens}] (got ${resolved.minTokens})`);
  }
  if (resolved.minTokens > 0 && resolved.structuredOutput !== null) {
    // Its grammar may be complete before then, leaving only the EOS that minTokens forbids.
    throw invalidArgument('minTokens must be 0 with a structuredOutput, whose grammar may end sooner');
  }
  checkBeamSearch(resolved);
  // Fresh arrays: the caller's input and the shared defaults never alias a request's params.
  return {
    ...resolved,
    stop: [...resolved.stop],
    stopTokenIds: [...resolved.stopTokenIds],
    logitBias: resolved.logitBias === null ? null : { ...resolved.logitBias },
    allowedTokenIds: resolved.allowedTokenIds === null ? null : [...resolved.allowedTokenIds],
    badWords: [...resolved.badWords],
  };
}

/**
 * What resolveSamplingParams cannot check without the model: the token ids of logitBias and
 * allowedTokenIds lie within its vocabulary of `vocabSize` tokens (vLLM refuses them too).
 */
export function checkTokenIds(params: SamplingParams, vocabSize: number): void {
  const vocabulary = `the vocabulary (0..${vocabSize - 1})`;
  const outside = Object.keys(params.logitBias ?? {}).find((key) => Number(key) >= vocabSize);
  if (outside !== undefined) throw invalidArgument(`logitBias key "${outside}" is outside ${vocabulary}`);
  const notAllowed = params.allowedTokenIds?.find((id) => id >= vocabSize);
  if (notAllowed !== undefined) throw invalidArgument(`allowedTokenIds holds ${notAllowed}, outside ${vocabulary}`);
}

/** A logit bias with every key a token id (a decimal integer, as the OpenAI API sends it) and every bias in range; it throws naming the key that is not. */
function parseLogitBias(value: object): Record<number, number> {
  const bias: Record<number, number> = {};
  for (const [key, b] of Object.entries(value)) {
    if (!/^(0|[1-9][0-9]*)$/.test(key) || !Number.isSafeInteger(Number(key))) throw invalidArgument(`logitBias key ${JSON.stringify(key)} is not a token id (a non-negative integer)`);
    if (!(typeof b === 'number' && b >= -MAX_LOGIT_BIAS && b <= MAX_LOGIT_BIAS)) {
      throw invalidArgument(`logitBias key "${key}" must map to a number in [-${MAX_LOGIT_BIAS}, ${MAX_LOGIT_BIAS}] (got ${describe(b)})`);
    }
    bias[Number(key)] = b;
  }
  return bias;
}

/** Beam search's own fields go with useBeamSearch, which returns beams, not samples: what shapes samples is refused. */
function checkBeamSearch(p: SamplingParams): void {
  if (!p.useBeamSearch) {
    const stray = p.beamWidth !== null ? 'beamWidth' : p.lengthPenalty !== 1 ? 'lengthPenalty' : p.earlyStopping !== false ? 'earlyStopping' : null;
    if (stray !== null) throw invalidArgument(`${stray} applies to beam search only: set useBeamSearch`);
    return;
  }
  const width = p.beamWidth ?? p.n;
  if (p.n > width) throw invalidArgument(`n must be at most beamWidth (${width}) with useBeamSearch: it returns the n best beams (got ${p.n})`);
  const refused =
    p.stop.length > 0 ? 'stop'
    : p.logprobs !== null ? 'logprobs'
    : p.structuredOutput !== null ? 'structuredOutput'
    : p.minTokens > 0 ? 'minTokens'
    : p.logitBias !== null ? 'logitBias'
    : p.allowedTokenIds !== null ? 'allowedTokenIds'
    : p.badWords.length > 0 ? 'badWords'
    : null;
  if (refused !== null) throw invalidArgument(`${refused} is not supported with useBeamSearch (stop token ids are)`);
}

function parseLayer(values: unknown, layer: Layer): Partial<SamplingParams> {
  if (typeof values !== 'object' || values === null || Array.isArray(values)) {
    throw invalidArgument(`${layer.noun}s must be an object (got ${describe(values)})`);
  }
  const parsed: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(values)) {
    if (!Object.hasOwn(RULES, key)) throw invalidArgument(`unknown ${layer.noun} ${JSON.stringify(key)}${suggestion(key)}`);
    if (value === undefined) continue;
    const rule: Rule<unknown> = RULES[key as keyof SamplingParams];
    const result = rule.parse(value);
    if (result === undefined) throw invalidArgument(`${layer.fieldPrefix}${key} must be ${rule.expected} (got ${describe(value)})`);
    parsed[key] = result;
  }
  return parsed as Partial<SamplingParams>;
}

/** Points a snake_case name (as the OpenAI API spells it) at the camelCase field it means. */
function suggestion(key: string): string {
  const camel = key.replace(/_([a-z])/g, (_, letter: string) => letter.toUpperCase());
  return camel !== key && Object.hasOwn(RULES, camel) ? ` (did you mean "${camel}"?)` : '';
}

function integerIn(min: number, max: number): Rule<number> {
  let expected: string;
  if (min === Number.MIN_SAFE_INTEGER) expected = 'a safe integer';
  else if (max === Number.MAX_SAFE_INTEGER) expected = `an integer >= ${min}`;
  else expected = `an integer in [${min}, ${max}]`;
  return { expected, parse: (value) => (Number.isSafeInteger(value) && (value as number) >= min && (value as number) <= max ? (value as number) : undefined) };
}

function numberIn(min: number, max: number, options: { excludeMin?: boolean } = {}): Rule<number> {
  const aboveMin = (x: number) => (options.excludeMin ? x > min : x >= min);
  return {
    expected: `a number in ${options.excludeMin ? '(' : '['}${min}, ${max}]`,
    parse: (value) => (typeof value === 'number' && aboveMin(value) && value <= max ? value : undefined),
  };
}

function nullable<T>(rule: Rule<T>): Rule<T | null> {
  return { expected: `${rule.expected} or null`, parse: (value) => (value === null ? null : rule.parse(value)) };
}

function boolean(): Rule<boolean> {
  return { expected: 'a boolean', parse: (value) => (typeof value === 'boolean' ? value : undefined) };
}

/** The offending value as the user wrote it, cut short. */
function describe(value: unknown): string {
  if (typeof value === 'number' || typeof value === 'boolean' || value === null || value === undefined) return String(value);
  if (typeof value === 'bigint') return `${value}n`;
  const json = jsonOf(value);
  if (json === undefined) return `a ${typeof value}`;
  return json.length > 60 ? `${json.slice(0, 57)}...` : json;
}

/** JSON text, or undefined for what JSON cannot spell (functions, symbols, cycles). */
function jsonOf(value: unknown): string | undefined {
  try {
    return JSON.stringify(value);
  } catch {
    return undefined;
  }
}
