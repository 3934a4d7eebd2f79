import { isGgufPath } from '../checkpoint/model-files.ts';
import type { LLM } from '../engine/llm.ts';
import { invalidModel } from '../errors.ts';

/**
 * Refuses a command that needs the model's tokenizer when it has none, in one line: what `purpose`
 * cannot be done, and what to do (`otherwise`, or give the model a tokenizer).
 */
export function requireTokenizer(llm: LLM, purpose: string, otherwise?: string): void {
  if (llm.tokenizer !== null) return;
  if (isGgufPath(llm.modelPath)) {
    const convert = 'convert the model again with its vocabulary (llama.cpp\'s converter writes tokenizer.ggml.*)';
    throw invalidModel(`${llm.modelName} is a GGUF file without a vocabulary, so ${purpose}: ${otherwise === undefined ? convert : `${otherwise}, or ${convert}`}`);
  }
  const add = `copy the model's tokenizer.json and tokenizer_config.json into ${llm.modelPath}`;
  throw invalidModel(`${llm.modelName} has no tokenizer.json, so ${purpose}: ${otherwise === undefined ? add : `${otherwise}, or ${add}`}`);
}
