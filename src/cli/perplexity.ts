import { readFileSync } from 'node:fs';
import { LLM } from '../engine/llm.ts';
import { invalidArgument } from '../errors.ts';
import { perplexity } from '../eval/perplexity.ts';
import { requireTokenizer } from './require-tokenizer.ts';
import { ENGINE_FLAGS, ENGINE_FLAGS_HELP, engineConfigFromFlags, integerFlag } from './engine-flags.ts';
import { parseFlags } from './parse-flags.ts';

/** The default window, when the model's context allows it. */
const DEFAULT_CONTEXT_LENGTH = 1024;

export const PERPLEXITY_HELP = `Usage: keel perplexity --file F [options]

Perplexity of a text file under the model, by sliding windows (transformers' perplexity guide):
windows of --context-length tokens start every --stride tokens, and each scores the tokens past
the end of the window before it, with as much context as the window gives.

  --file F                       the text (UTF-8), tokenized whole with the model's tokenizer
  --context-length N             tokens per window (default min(${DEFAULT_CONTEXT_LENGTH}, max model length - 1))
  --stride S                     tokens between window starts (default half the context length)
  --decode-steps                 score each token in a step of its own, as decoding computes it (one
                                 query token per step: slow); implied by --sparse-attention, which
                                 changes decode steps only
  --json                         print one JSON line: {"perplexity": x, "mean_nll": ..., "tokens": ..., ...}

${ENGINE_FLAGS_HELP}`;

export async function perplexityCommand(argv: string[]): Promise<void> {
  const { values } = parseFlags('keel perplexity', {
    args: argv,
    options: {
      ...ENGINE_FLAGS,
      file: { type: 'string' },
      'context-length': { type: 'string' },
      stride: { type: 'string' },
      'decode-steps': { type: 'boolean' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(PERPLEXITY_HELP);
    return;
  }
  if (values.file === undefined) throw invalidArgument('give the text to score with --file (see keel perplexity --help)');
  const text = readText(values.file);
  const requestedContext = integerFlag('--context-length', values['context-length']);
  const requestedStride = integerFlag('--stride', values.stride);
  const engineOptions = engineConfigFromFlags(values);
  // A one-token step budget splits every window into one-token chunks: each token is then scored
  // by a step of one query token with its window's earlier tokens cached, which is a decode step.
  const decodeSteps = values['decode-steps'] === true || engineOptions.sparseAttention !== undefined;
  if (decodeSteps && engineOptions.maxNumBatchedTokens !== undefined) throw invalidArgument('--decode-steps runs one token per step: drop --max-num-batched-tokens');
  const llm = await LLM.load(decodeSteps ? { ...engineOptions, maxNumBatchedTokens: 1 } : engineOptions);
  try {
    requireTokenizer(llm, 'the --file text cannot be tokenized');
    // A window is a prompt with one token to generate after it.
    const contextLength = requestedContext ?? Math.min(DEFAULT_CONTEXT_LENGTH, llm.maxModelLen - 1);
    if (contextLength > llm.maxModelLen - 1) {
      throw invalidArgument(`--context-length ${contextLength} does not fit the max model length ${llm.maxModelLen} (at most ${llm.maxModelLen - 1})`);
    }
    const stride = requestedStride ?? Math.max(1, Math.floor(contextLength / 2));
    const tokens = llm.encode(text);
    const result = await perplexity(llm, tokens, { contextLength, stride });
    const summary = {
      perplexity: result.perplexity,
      mean_nll: result.meanNll,
      tokens: tokens.length,
      scored_tokens: result.numScoredTokens,
      windows: result.numWindows,
      context_length: contextLength,
      stride,
      decode_steps: decodeSteps,
      model: llm.config.model,
      backend: llm.backendName,
    };
    if (values.json) console.log(JSON.stringify(summary));
    else console.log(`perplexity ${result.perplexity.toFixed(4)} over ${result.numScoredTokens} tokens (${result.numWindows} windows of ${contextLength}, stride ${stride})`);
  } finally {
    await llm.close();
  }
}

function readText(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    throw invalidArgument(`cannot read --file ${path}: ${(error as Error).message}`);
  }
}
