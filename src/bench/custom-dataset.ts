import { readFileSync } from 'node:fs';
import { invalidArgument } from '../errors.ts';

/**
 * vLLM's "custom" dataset (`--dataset-name custom --dataset-path F`): a JSONL file, one request per
 * line, its text under "prompt"; blank lines are skipped. Real text where random token ids would
 * not do: speculative decoding's acceptance depends on what the prompts say.
 */
export function readCustomPrompts(path: string): string[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw invalidArgument(`--dataset-path ${path} cannot be read: ${(error as Error).message}`);
  }
  const prompts: string[] = [];
  text.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    let record: unknown;
    try {
      record = JSON.parse(line);
    } catch {
      throw invalidArgument(`${path} line ${i + 1} is not JSON: each line holds one {"prompt": "..."}`);
    }
    const prompt = (record as { prompt?: unknown } | null)?.prompt;
    if (typeof prompt !== 'string' || prompt === '') throw invalidArgument(`${path} line ${i + 1} has no "prompt" string`);
    prompts.push(prompt);
  });
  if (prompts.length === 0) throw invalidArgument(`${path} holds no prompts: each line holds one {"prompt": "..."}`);
  return prompts;
}
