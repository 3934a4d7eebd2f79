import { readFileSync } from 'node:fs';
import { invalidModel } from '../errors.ts';

/** Reads and parses a JSON file; a missing file or bad JSON is an invalid model naming the path. */
export function readJsonFile(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw invalidModel(`cannot read ${path}: ${(error as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw invalidModel(`${path} is not valid JSON: ${(error as Error).message}`);
  }
}
