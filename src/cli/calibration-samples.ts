import { readFileSync } from 'node:fs';
import { openModelFiles } from '../checkpoint/model-files.ts';
import { invalidArgument } from '../errors.ts';
import { loadTokenizerIfPresent } from '../tokenizer/tokenizer.ts';
import { integerFlag } from './engine-flags.ts';

const DEFAULTS = { numSamples: 128, seqLen: 512 };

/** The flags of the commands that calibrate on text (keel quantize, keel prune), for parseFlags. */
export const CALIBRATION_FLAGS = {
  calibration: { type: 'string' },
  'num-samples': { type: 'string' },
  'seq-len': { type: 'string' },
} as const;

/** Help lines of --num-samples and --seq-len (--calibration's says which methods need it). */
export const CALIBRATION_WINDOW_HELP = `  --num-samples N                calibration windows (default ${DEFAULTS.numSamples}, fewer if the text is short)
  --seq-len L                    tokens per window (default ${DEFAULTS.seqLen})`;

/**
 * The calibration windows the flags ask for; none when the method runs without them and no
 * --calibration is given. `who` names the methods that need the text, for the error.
 */
export function calibrationFromFlags(
  dir: string,
  values: { calibration?: string; 'num-samples'?: string; 'seq-len'?: string },
  optional: boolean,
  who: string,
): number[][] {
  if (optional && values.calibration === undefined) return [];
  const count = integerFlag('--num-samples', values['num-samples']) ?? DEFAULTS.numSamples;
  const length = integerFlag('--seq-len', values['seq-len']) ?? DEFAULTS.seqLen;
  return calibrationSamples(dir, values.calibration, who, count, length);
}

/** Up to `count` consecutive windows of `length` tokens of the calibration text. */
function calibrationSamples(dir: string, file: string | undefined, who: string, count: number, length: number): number[][] {
  if (file === undefined) throw invalidArgument(`${who} need calibration text: --calibration FILE`);
  if (!(count >= 1 && length >= 2)) throw invalidArgument('--num-samples must be at least 1 and --seq-len at least 2');
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw invalidArgument(`cannot read --calibration ${file}: ${(error as Error).message}`);
  }
  const tokenizer = loadTokenizerIfPresent(openModelFiles(dir));
  if (tokenizer === null) throw invalidArgument(`${dir} has no tokenizer.json to tokenize the calibration text with`);
  const tokens = tokenizer.encode(text, { addSpecialTokens: false });
  const samples: number[][] = [];
  for (let at = 0; at + length <= tokens.length && samples.length < count; at += length) samples.push(tokens.slice(at, at + length));
  if (samples.length === 0) throw invalidArgument(`--calibration ${file} holds ${tokens.length} tokens, fewer than one window of --seq-len ${length}`);
  return samples;
}
