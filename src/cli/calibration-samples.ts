import { readFileSync } from 'node:fs';
import { openModelFiles } from '../checkpoint/model-files.ts';
import { invalidArgument } from '../errors.ts';
import { loadTokenizerIfPresent } from '../tokenizer/tokenizer.ts';

/** Up to `count` consecutive windows of `length` tokens of the calibration text. */
export function calibrationSamples(dir: string, file: string | undefined, who: string, count: number, length: number): number[][] {
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
