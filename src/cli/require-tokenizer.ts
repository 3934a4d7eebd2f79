import type { LLM } from '../engine/llm.ts';
import { invalidModel } from '../errors.ts';

/**
 * Refuses a command that needs the model's tokenizer when its directory has none, in one line:
 * what `purpose` cannot be done, and what to do (`otherwise`, or give the directory a tokenizer).
 */
export function requireTokenizer(llm: LLM, purpose: string, otherwise?: string): void {
  if (llm.tokenizer !== null) return;
  const add = `copy the model's tokenizer.json and tokenizer_config.json into ${llm.modelDir}`;
  throw invalidModel(`${llm.modelName} has no tokenizer.json, so ${purpose}: ${otherwise === undefined ? add : `${otherwise}, or ${add}`}`);
}
